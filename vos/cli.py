"""The ``vos`` command line: ``vos track`` here, other commands from their own packages.

Packages that build on ``vos`` (evaluation, service) add their commands through the ``seem_vos.commands``
entry-point group, each a ``register(subparsers)`` function, so this module never imports them.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
from pydantic.fields import FieldInfo
from tqdm import tqdm

from vos.engine import DEFAULT_ENGINE, available_engines, create_engine, engine_options_class
from vos.errors import PromptError, VosError
from vos.masks import mask_from_png_bytes, read_label_png
from vos.outputs import ResultWriter
from vos.prompts import Box, ObjectPrompt, Point, Reference, Scribble
from vos.tracker import track
from vos.video import open_video, read_image


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VosError as error:
        print(f"vos {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vos", description="Video object segmentation and tracking with SEEM.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_track(subparsers)
    from vos.seem.cli_weights import register as register_weights

    register_weights(subparsers)
    for entry in sorted(entry_points(group="seem_vos.commands"), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


# ---------------------------------------------------------------------------------------------- engine options


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Engine choice and options shared by every command that runs an engine (track, eval, submit).

    One flag per option of every registered engine's options model (``working_width`` -> ``--working-width``);
    the chosen engine validates the values, so an option of another engine is a clear error.
    """
    parser.add_argument("--engine", default=DEFAULT_ENGINE, choices=available_engines(),
                        help="tracking engine (default: classical, weight-free)")
    group = parser.add_argument_group("engine options (unset ones keep the engine's default)")
    for name, (info, engines) in _engine_option_fields().items():
        choices = _literal_choices(info.annotation)
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, choices=choices,
                           type=_cli_type(info.annotation), metavar=None if choices else name.upper(),
                           help=f"{info.description} [{', '.join(engines)}; default {info.default}]")


def _engine_option_fields() -> dict[str, tuple[FieldInfo, list[str]]]:
    """Every option name of the registered engines, with its field (from the first engine that declares it) and the
    engines that take it."""
    fields: dict[str, tuple[FieldInfo, list[str]]] = {}
    for engine in available_engines():
        try:
            options = engine_options_class(engine)
        except ImportError:  # registered, but its module is not installed here: it takes no flags
            continue
        for name, info in options.model_fields.items():
            fields.setdefault(name, (info, []))[1].append(engine)
    return fields


def _literal_choices(annotation: Any) -> list[str] | None:
    """The allowed values of a ``Literal[...]`` option (optionally ``| None``), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return [str(v) for v in typing.get_args(candidate)]
    return None


def _cli_type(annotation: Any) -> type:
    """int or float for numeric options (so JSON submissions carry numbers), str for everything else."""
    return annotation if annotation in (int, float) else str


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options the user set (unset ones keep each engine's defaults)."""
    return {name: getattr(args, name) for name in _engine_option_fields() if getattr(args, name, None) is not None}


# ---------------------------------------------------------------------------------------------- track


class _PromptItem(argparse.Action):
    """Collects prompt options in command-line order, so ``--object`` can start a new object."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option: str | None = None) -> None:
        items = getattr(namespace, "prompt_items", None) or []
        items.append((self.dest, value))
        namespace.prompt_items = items


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """The repeatable prompt options shared by ``vos track`` and ``vos submit``; read them with
    :func:`prompts_from_args`."""
    prompts = parser.add_argument_group(
        "prompts (repeatable, in order; --object ID starts another object, default id 1; --frame N puts the prompts "
        "that follow on frame N, default 0)")
    prompts.add_argument("--object", dest="object", type=int, action=_PromptItem, metavar="ID",
                         help="start the prompts of object ID")
    prompts.add_argument("--frame", dest="frame", type=int, action=_PromptItem, metavar="N",
                         help="the frame (0-based) the prompts that follow are on; an object may be prompted on "
                              "several frames")
    prompts.add_argument("--mask", dest="mask", action=_PromptItem, metavar="PNG",
                         help="mask PNG of the object (non-zero = object)")
    prompts.add_argument("--label-map", dest="label_map", action=_PromptItem, metavar="PNG",
                         help="indexed PNG with one object per palette index (a DAVIS first-frame annotation)")
    prompts.add_argument("--point", dest="point", action=_PromptItem, metavar="X,Y", help="positive click")
    prompts.add_argument("--negative", dest="negative", action=_PromptItem, metavar="X,Y",
                         help="negative (background) click")
    prompts.add_argument("--box", dest="box", action=_PromptItem, metavar="X0,Y0,X1,Y1", help="bounding box")
    prompts.add_argument("--scribble", dest="scribble", action=_PromptItem, metavar="X,Y;X,Y;...",
                         help="polyline stroke on the object")
    prompts.add_argument("--text", dest="text", action=_PromptItem, metavar="PHRASE", help="text phrase (SEEM engine)")
    prompts.add_argument("--reference", dest="reference", action=_PromptItem, metavar="IMAGE:MASK",
                         help="reference image and its object mask (SEEM engine)")
    prompts.add_argument("--scribble-width", type=float, default=5.0, help="stroke width in pixels (default 5)")
    parser.set_defaults(prompt_items=None)


def _register_track(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "track", help="segment prompted objects on their frames and track them through the whole video")
    parser.add_argument("video", help="video file (mp4, mov, mkv, webm) or folder of JPEG/PNG frames")
    add_prompt_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("vos-out"), help="output folder (default ./vos-out)")
    parser.add_argument("--no-overlay", action="store_true", help="skip the overlay MP4")
    parser.set_defaults(func=run_track)


def run_track(args: argparse.Namespace) -> int:
    with open_video(args.video) as video:
        prompts = prompts_from_args(args.prompt_items or [], args.scribble_width)
        engine = create_engine(args.engine, **engine_options(args))
        results = track(video, engine, prompts)
        with ResultWriter(args.out, video.info, overlay=not args.no_overlay) as writer, \
                tqdm(total=video.info.num_frames, unit="frame", desc=f"tracking ({args.engine})") as progress:
            for result in results:
                writer.write(result)
                progress.update(1)
    objects = len({p.object_id for p in prompts})
    print(f"wrote {video.info.num_frames} frames of masks for {objects} object(s) to {args.out}")
    return 0


def prompts_from_args(items: Sequence[tuple[str, Any]], scribble_width: float) -> list[ObjectPrompt]:
    """Group ordered prompt options into one :class:`ObjectPrompt` per object and frame."""
    prompts: dict[tuple[int, int], dict[str, Any]] = {}
    current, frame = 1, 0
    for kind, value in items:
        if kind == "object":
            current = value
        elif kind == "frame":
            if value < 0:
                raise PromptError(f"--frame must be 0 or more, got {value}")
            frame = value
        elif kind == "label_map":
            for object_id, mask in _split_label_map(value).items():
                prompts.setdefault((object_id, frame), {})["mask"] = mask
        else:
            _add_prompt(prompts.setdefault((current, frame), {}), kind, value, scribble_width)
    if not prompts:
        raise PromptError("no prompt given: use --point, --box, --mask, --label-map, --scribble, --text or --reference")
    try:
        return [ObjectPrompt(object_id=i, frame_index=t, **fields) for (i, t), fields in prompts.items()]
    except ValueError as error:
        raise PromptError(str(error)) from error


def _add_prompt(fields: dict[str, Any], kind: str, value: str, scribble_width: float) -> None:
    if kind == "mask":
        fields["mask"] = mask_from_png_bytes(_read_bytes(value))
    elif kind in ("point", "negative"):
        x, y = _numbers(value, 2, f"--{kind}")
        fields.setdefault("points", []).append(Point(x=x, y=y, positive=kind == "point"))
    elif kind == "box":
        x0, y0, x1, y1 = _numbers(value, 4, "--box")
        fields["box"] = _model(Box, "--box", x0=x0, y0=y0, x1=x1, y1=y1)
    elif kind == "scribble":
        line = [tuple(_numbers(p, 2, "--scribble")) for p in value.split(";") if p.strip()]
        fields.setdefault("scribbles", []).append(_model(Scribble, "--scribble", lines=[line], width=scribble_width))
    elif kind == "text":
        fields["text"] = value
    elif kind == "reference":
        image_path, _, mask_path = value.rpartition(":")
        if not image_path:
            raise PromptError(f"--reference needs IMAGE:MASK, got {value!r}")
        fields["reference"] = Reference(image=_read_reference_image(image_path),
                                        mask=mask_from_png_bytes(_read_bytes(mask_path)))


def _read_reference_image(path: str) -> np.ndarray:
    try:
        return read_image(path)
    except VosError as error:
        raise PromptError(f"--reference: {error}") from error


def _model(cls: Any, option: str, **values: Any) -> Any:
    try:
        return cls(**values)
    except ValueError as error:
        raise PromptError(f"{option}: {error}") from error


def _numbers(text: str, count: int, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise PromptError(f"{option} expects {count} comma-separated numbers, got {text!r}")
    return values


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise PromptError(f"cannot read {path}: {error.strerror}") from error


def _split_label_map(path: str) -> dict[int, np.ndarray]:
    try:
        labels = read_label_png(path)
    except OSError as error:
        raise PromptError(f"cannot read label map {path}: {error}") from error
    ids = [int(i) for i in np.unique(labels) if 0 < i < 255]
    if not ids:
        raise PromptError(f"label map {path} has no object (all pixels are background or void)")
    return {i: labels == i for i in ids}


if __name__ == "__main__":
    sys.exit(main())
