"""``vos eval``: benchmark engines on DAVIS and YouTube-VOS, or score existing result folders.

Registered through the ``seem_vos.commands`` entry-point group (``eval = "eval.cli:register"``)::

    vos eval davis --root DAVIS --year 2017 --engine classical --engine seem --weights W --out runs/
    vos eval davis --root DAVIS --year 2016 --split train --prompt click --engine classical --out runs/
    vos eval davis --root DAVIS --year 2016 --predictions results/flow [--out reports/]
    vos eval youtube-vos --root YTVOS --year 2019 --engine seem --weights W --out runs/
    vos eval interactive --root DAVIS --year 2016 --engine classical [--mask-corrections] --out reports/

Engine runs write ``<out>/<engine>/<sequence>/<frame>.png`` (DAVIS; ``<out>/<engine>-<prompt>/`` with ``--prompt box``
or ``click``, which also reports the mean IoU on the prompted frames) or ``<out>/<engine>/Annotations/...`` plus
``<out>/<engine>/submission.zip`` (YouTube-VOS) and reuse finished sequences when rerun with the same ``--out``.
DAVIS reports go next to each method's results (see :mod:`eval.report`); comparing methods adds
``<out>/comparison.csv`` and ``<out>/comparison.png``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.datasets import VosDataset, open_dataset
from eval.interactive import MAX_ROUNDS, REPORT_ROUNDS, run_interactive, summary_row, write_interactive_report
from eval.report import format_table, write_comparison, write_report
from eval.runner import PROMPT_PROTOCOLS, EngineRun, ResultsError, prompted_frame_iou, run_engine, score_predictions
from eval.youtube_vos import submission_files, write_submission
from vos.cli import add_engine_arguments, engine_options
from vos.engine import DEFAULT_ENGINE, available_engines, create_engine, engine_options_class
from vos.errors import VosError


class UsageError(VosError):
    """Options that parse but do not go together."""


@dataclass(frozen=True)
class _Method:
    """One evaluated method: an engine run or a folder of results, with where its report goes."""

    name: str
    predictions_dir: Path
    report_dir: Path
    run: EngineRun | None = None


# -------------------------------------------------------------------------------------------------------- arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="benchmark engines on DAVIS / YouTube-VOS or score result folders",
        description="Run engines on a benchmark with first-frame ground-truth prompts, or score existing results.",
    )
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    _register_davis(benchmarks)
    _register_interactive(benchmarks)
    _register_youtube_vos(benchmarks)


def _add_engines(
    parser: argparse.ArgumentParser, exclusive_with: argparse._MutuallyExclusiveGroup | None = None
) -> None:
    """The shared engine options, with ``--engine`` made repeatable so one call can compare engines."""
    add_engine_arguments(parser)
    # The parser resolves conflicts, so this definition replaces the shared single-valued --engine.
    (exclusive_with or parser).add_argument(
        "--engine", dest="engines", action="append", choices=available_engines(), metavar="NAME",
        help=f"engine to run, repeat to compare engines ({', '.join(available_engines())}; default {DEFAULT_ENGINE})",
    )


def _register_davis(benchmarks: argparse._SubParsersAction) -> None:
    parser = benchmarks.add_parser(
        "davis",
        conflict_handler="resolve",
        help="DAVIS 2016/2017 semi-supervised: run engines or score results, write CSVs, table and plots",
        description="Objects are prompted with their first-frame ground-truth masks; metrics are the official J/F.",
    )
    parser.add_argument("--root", type=Path, required=True,
                        help="DAVIS folder holding JPEGImages/, Annotations/, ImageSets/")
    parser.add_argument("--year", choices=["2016", "2017"], default="2017", help="benchmark year (default 2017)")
    parser.add_argument("--split", default="val", help="ImageSets split (default val)")
    parser.add_argument("--davis-resolution", choices=["480p", "Full-Resolution"], default="480p",
                        help="image/annotation folder (default 480p)")
    parser.add_argument("--sequences", nargs="+", metavar="SEQ", help="evaluate only these sequences")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--predictions", type=Path, action="append", metavar="DIR",
                        help="score this results folder (<DIR>/<sequence>/<frame>.png) instead of running an engine; "
                             "repeat to compare folders")
    _add_engines(parser, source)
    parser.add_argument("--out", type=Path, help="output folder (required with --engine; with --predictions the "
                                                 "reports go into DIR unless --out is given)")
    parser.add_argument("--prompt", choices=PROMPT_PROTOCOLS, default="mask",
                        help="how engines are prompted on each object's first frame: its ground-truth mask, the tight "
                             "box around it, or one click at its interior point (default mask)")
    parser.set_defaults(func=run_davis)


def _register_interactive(benchmarks: argparse._SubParsersAction) -> None:
    parser = benchmarks.add_parser(
        "interactive",
        help="DAVIS with a simulated user: one click per object, then one correction per round on the worst frame",
        description="Round 0: one positive click at each object's interior point on its first annotated frame. Each "
                    "further round corrects the frame with the lowest J (a click at the interior point of the "
                    "largest error region, or with --mask-corrections its ground-truth masks) and propagates both "
                    "ways from it. Reports J&F after rounds 0, 1, 3 and 5 and the rounds to reach J&F >= 0.8.",
    )
    parser.add_argument("--root", type=Path, required=True,
                        help="DAVIS folder holding JPEGImages/, Annotations/, ImageSets/")
    parser.add_argument("--year", choices=["2016", "2017"], default="2016", help="benchmark year (default 2016)")
    parser.add_argument("--split", default="val", help="ImageSets split (default val)")
    parser.add_argument("--sequences", nargs="+", metavar="SEQ", help="evaluate only these sequences")
    parser.add_argument("--mask-corrections", action="store_true",
                        help="correct with the worst frame's ground-truth masks instead of one click")
    parser.add_argument("--rounds", type=int, default=MAX_ROUNDS,
                        help=f"most correction rounds per sequence (default {MAX_ROUNDS})")
    add_engine_arguments(parser)
    parser.add_argument("--out", type=Path, required=True,
                        help="report folder: interactive.csv, sequences/<name>.csv, jf-per-round.png")
    parser.set_defaults(func=run_interactive_eval)


def _register_youtube_vos(benchmarks: argparse._SubParsersAction) -> None:
    parser = benchmarks.add_parser(
        "youtube-vos",
        conflict_handler="resolve",
        help="YouTube-VOS 2018/2019: run engines and zip the server submission",
        description="Objects are prompted on their first annotated frame; the PNGs of the split's frames are zipped "
                    "as Annotations/<video>/<frame>.png for the evaluation server.",
    )
    parser.add_argument("--root", type=Path, required=True,
                        help="YouTube-VOS folder holding <split>/ (and <split>_all_frames/)")
    parser.add_argument("--year", type=int, choices=[2018, 2019], default=2019, help="benchmark year (default 2019)")
    parser.add_argument("--split", default="valid", help="split folder (default valid)")
    parser.add_argument("--all-frames", action="store_true",
                        help="propagate through <split>_all_frames (every frame); only the split's frames are written")
    parser.add_argument("--sequences", nargs="+", metavar="VIDEO", help="run only these videos")
    _add_engines(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(func=run_youtube_vos)


# ------------------------------------------------------------------------------------------------------------ DAVIS


def run_davis(args: argparse.Namespace) -> int:
    dataset = open_dataset(f"davis{args.year}", args.root, split=args.split, resolution=args.davis_resolution,
                           sequences=args.sequences)
    if args.predictions:
        if args.prompt != "mask":
            raise UsageError("--prompt says how an engine is prompted; it does not apply to scoring --predictions")
        methods = _prediction_methods(args.predictions, args.out)
    else:
        methods = _engine_methods(dataset, args.engines or [DEFAULT_ENGINE], args)
    title = f"DAVIS {args.year} {args.split}"
    summaries = {}
    for method in methods:
        summary = score_predictions(dataset, method.predictions_dir, description=f"scoring {method.name}")
        _write(lambda: write_report(summary, method.report_dir, f"{method.name} on {title}"), method.report_dir)
        summaries[method.name] = summary
    first = next(iter(summaries.values()))
    print(f"\nGlobal results on {title} ({first.n_sequences} sequences, {first.n_objects} objects):")
    print(format_table(summaries))
    print()
    for method in methods:
        if method.run is not None:
            print(_speed_line(method.run))
        if method.run is not None and args.prompt != "mask":
            iou = prompted_frame_iou(dataset, method.predictions_dir)
            print(f"{method.name}: mean IoU on the prompted frames ({args.prompt} prompts): {iou:.3f}")
        print(f"{method.name}: global.csv, per-sequence.csv and plots in {method.report_dir}")
    if len(methods) > 1:
        _write(lambda: write_comparison(summaries, args.out, title), args.out)  # several methods imply --out
        print(f"comparison: {args.out / 'comparison.csv'} and {args.out / 'comparison.png'}")
    return 0


def _prediction_methods(folders: Sequence[Path], out: Path | None) -> list[_Method]:
    """One method per results folder; its report goes into the folder itself (as the official toolkit does), into
    ``--out`` for a single folder, or into ``<out>/<name>`` when several are compared."""
    if len(folders) > 1 and out is None:
        raise UsageError("comparing several --predictions folders needs --out for the comparison table and plot")
    names = [folder.resolve().name for folder in folders]
    if len(set(names)) != len(names):
        names = [f"{k + 1}-{name}" for k, name in enumerate(names)]  # same folder names: number them
    if out is None:
        report_dirs = list(folders)
    elif len(folders) == 1:
        report_dirs = [out]
    else:
        report_dirs = [out / name for name in names]
    return [_Method(name, folder, report) for name, folder, report in zip(names, folders, report_dirs)]


def _engine_methods(dataset: VosDataset, engines: Sequence[str], args: argparse.Namespace) -> list[_Method]:
    if args.out is None:
        raise UsageError("--out is required when running an engine: its predictions and reports are written there")
    methods = []
    for engine, options in _options_per_engine(engines, engine_options(args)).items():
        folder = args.out / (engine if args.prompt == "mask" else f"{engine}-{args.prompt}")
        run = run_engine(dataset, engine, folder, options, protocol=args.prompt)
        methods.append(_Method(engine, run.results_dir, run.results_dir, run))
    return methods


def _options_per_engine(engines: Sequence[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each engine's options. One engine gets them all (so a misspent option is the engine's clear error); when
    comparing, each gets those it accepts, as ``--engine classical --engine seem --weights W`` means."""
    if len(set(engines)) != len(engines):
        raise UsageError(f"--engine lists an engine twice: {', '.join(engines)}")
    if len(engines) == 1:
        return {engines[0]: options}
    accepted = {e: set(engine_options_class(e).model_fields) for e in engines}
    unused = sorted(name for name in options if not any(name in params for params in accepted.values()))
    if unused:
        raise UsageError(f"no engine among {', '.join(engines)} takes the option(s) {', '.join(unused)}")
    return {e: {k: v for k, v in options.items() if k in accepted[e]} for e in engines}


def _speed_line(run: EngineRun) -> str:
    """Frames and speed of an engine run; reused sequences count with the timing recorded when they were made."""
    line = f"{run.engine}: {run.frames} frames in {run.wall_seconds:.1f} s"
    if run.wall_seconds > 0 and run.engine_seconds > 0:
        line += (f" ({run.frames / run.wall_seconds:.1f} frames/s with decoding and writing, "
                 f"{run.frames / run.engine_seconds:.1f} frames/s in the engine)")
    if run.reused:
        line += f"; {run.reused} of {len(run.sequences)} sequences reused from an earlier run"
    return line


def _write(write: Callable[[], object], where: Path) -> None:
    """Run a report writer, turning file-system failures (e.g. a read-only results folder) into clear errors."""
    try:
        write()
    except OSError as exc:
        reason = exc.strerror or exc
        raise ResultsError(f"cannot write the report into {where}: {reason}; pick a writable --out") from exc


# ------------------------------------------------------------------------------------------------------ interactive


def run_interactive_eval(args: argparse.Namespace) -> int:
    if args.rounds < max(REPORT_ROUNDS):
        raise UsageError(f"--rounds must be at least {max(REPORT_ROUNDS)}, the last reported round")
    dataset = open_dataset(f"davis{args.year}", args.root, split=args.split, sequences=args.sequences)
    engine = create_engine(args.engine, **engine_options(args))
    results = run_interactive(dataset, engine, mask_corrections=args.mask_corrections, rounds=args.rounds)
    mode = "mask" if args.mask_corrections else "click"
    title = f"{args.engine}, {mode} corrections, DAVIS {args.year} {args.split}"
    _write(lambda: write_interactive_report(results, args.out, title), args.out)
    row = summary_row(results)
    print(f"\nInteractive {title} ({len(results)} sequences):")
    print("  ".join(f"{name} {value:.3f}" for name, value in row.items()))
    print(f"interactive.csv, sequences/*.csv and jf-per-round.png in {args.out}")
    return 0


# ------------------------------------------------------------------------------------------------------ YouTube-VOS


def run_youtube_vos(args: argparse.Namespace) -> int:
    dataset = open_dataset(f"youtubevos{args.year}", args.root, split=args.split, all_frames=args.all_frames,
                           sequences=args.sequences)
    per_engine = _options_per_engine(args.engines or [DEFAULT_ENGINE], engine_options(args))
    n_files = len(submission_files(dataset))
    for engine, options in per_engine.items():
        run, archive = write_submission(dataset, engine, args.out / engine, options)
        print(_speed_line(run))
        print(f"{engine}: {n_files} PNGs for {len(dataset)} videos zipped into {archive}; upload it to the "
              f"YouTube-VOS {args.year} {args.split} evaluation server")
    return 0
