"""Evaluation reports: the official CSVs, a printable table, and plots (matplotlib, Agg, no display needed).

Per method (an engine, or a folder of results):

* ``global.csv``: one row with the official columns ``J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay``;
* ``per-sequence.csv``: one row per object, ``Sequence`` = ``<sequence>_<object id>`` as in the official toolkit,
  then the same columns computed for that object;
* ``jf-per-sequence.png`` (J&F bars per object) and ``j-per-frame.png`` (J over the evaluated frames, per object).

Comparing methods adds ``comparison.csv`` (one global row per method) and ``comparison.png`` (J&F per object and
overall, one bar per method).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from eval.metrics import SequenceMetrics, Summary

__all__ = [
    "GLOBAL_COLUMNS",
    "GLOBAL_CSV",
    "PER_SEQUENCE_CSV",
    "COMPARISON_CSV",
    "COMPARISON_PLOT",
    "JF_PLOT",
    "J_FRAMES_PLOT",
    "object_name",
    "object_row",
    "write_csvs",
    "format_table",
    "plot_per_sequence",
    "plot_per_frame_j",
    "plot_comparison",
    "write_report",
    "write_comparison",
    "save_figure",
]

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
GLOBAL_CSV = "global.csv"
PER_SEQUENCE_CSV = "per-sequence.csv"
COMPARISON_CSV = "comparison.csv"
COMPARISON_PLOT = "comparison.png"
JF_PLOT = "jf-per-sequence.png"
J_FRAMES_PLOT = "j-per-frame.png"
LINE_STYLES = ("-", "--", ":", "-.")
CSV_DIGITS = 6  # enough for 1e-6 comparisons with reference numbers, still readable


# --------------------------------------------------------------------------------------------------------------- CSV


def object_name(metrics: SequenceMetrics) -> str:
    """The official per-sequence row name: ``<sequence>_<object id>``."""
    return f"{metrics.sequence}_{metrics.object_id}"


def object_row(metrics: SequenceMetrics) -> dict[str, float]:
    """The official columns for one object."""
    return {
        "J&F-Mean": metrics.JF_mean,
        "J-Mean": metrics.J_mean,
        "J-Recall": metrics.J_recall,
        "J-Decay": metrics.J_decay,
        "F-Mean": metrics.F_mean,
        "F-Recall": metrics.F_recall,
        "F-Decay": metrics.F_decay,
    }


def _write_csv(path: Path, first_column: str, rows: Sequence[tuple[str, Mapping[str, float]]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([first_column, *GLOBAL_COLUMNS])
        for name, values in rows:
            writer.writerow([name, *(f"{values[c]:.{CSV_DIGITS}f}" for c in GLOBAL_COLUMNS)])
    return path


def write_csvs(summary: Summary, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``global.csv`` and ``per-sequence.csv`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    global_csv = out_dir / GLOBAL_CSV
    with global_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(GLOBAL_COLUMNS)
        writer.writerow([f"{summary.as_dict()[c]:.{CSV_DIGITS}f}" for c in GLOBAL_COLUMNS])
    rows = [(object_name(m), object_row(m)) for m in summary.per_object]
    return global_csv, _write_csv(out_dir / PER_SEQUENCE_CSV, "Sequence", rows)


# ------------------------------------------------------------------------------------------------------------- table


def format_table(summaries: Mapping[str, Summary], first_column: str = "Method") -> str:
    """A fixed-width table of the global columns, one row per method, 3 decimals like the official printout."""
    names = list(summaries)
    name_width = max(len(first_column), *(len(n) for n in names))
    widths = [max(len(c), 6) for c in GLOBAL_COLUMNS]
    header = "  ".join([first_column.ljust(name_width), *(c.rjust(w) for c, w in zip(GLOBAL_COLUMNS, widths))])
    lines = [header, "-" * len(header)]
    for name in names:
        values = summaries[name].as_dict()
        cells = (f"{values[c]:.3f}".rjust(w) for c, w in zip(GLOBAL_COLUMNS, widths))
        lines.append("  ".join([name.ljust(name_width), *cells]))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------- plots


def save_figure(figure: Figure, path: Path) -> Path:
    """Lay out ``figure`` and write it to ``path`` as PNG."""
    figure.tight_layout()
    figure.savefig(path, dpi=100)  # a bare Figure renders with Agg: no pyplot state, no display
    return path


def plot_per_sequence(summary: Summary, path: str | os.PathLike[str], title: str = "") -> Path:
    """Bars of J&F-Mean per object, with the global J&F as a dashed line."""
    objects = summary.per_object
    figure = Figure(figsize=(max(6.0, 0.35 * len(objects) + 2), 4.5))
    axes = figure.add_subplot()
    positions = range(len(objects))
    axes.bar(positions, [m.JF_mean for m in objects], color="tab:blue")
    axes.axhline(summary.JF_mean, color="tab:red", linestyle="--", label=f"global J&F {summary.JF_mean:.3f}")
    axes.set_xticks(list(positions), [object_name(m) for m in objects], rotation=60, ha="right", fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("J&F-Mean")
    axes.set_title(title or "J&F per sequence")
    axes.legend(loc="lower right")
    return save_figure(figure, Path(path))


def plot_per_frame_j(summary: Summary, path: str | os.PathLike[str], title: str = "") -> Path:
    """J over the evaluated frames, one line per object: where tracking drifts or recovers."""
    figure = Figure(figsize=(10, 5))
    axes = figure.add_subplot()
    for k, metrics in enumerate(summary.per_object):
        style = LINE_STYLES[k // 10 % len(LINE_STYLES)]  # the default cycle has 10 colours: vary the dash after
        axes.plot(metrics.frame_indices, metrics.J_per_frame, style, linewidth=1, label=object_name(metrics))
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("frame")
    axes.set_ylabel("J (region similarity)")
    axes.set_title(title or "J per frame")
    axes.legend(fontsize=7, ncol=max(1, len(summary.per_object) // 20), loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(figure, Path(path))


def plot_comparison(summaries: Mapping[str, Summary], path: str | os.PathLike[str], title: str = "") -> Path:
    """Grouped bars: J&F of every object and overall ("global"), one bar per method."""
    methods = list(summaries)
    objects = [object_name(m) for m in next(iter(summaries.values())).per_object]
    groups = [*objects, "global"]
    width = 0.8 / len(methods)
    figure = Figure(figsize=(max(7.0, 0.3 * len(groups) * len(methods) + 2), 4.5))
    axes = figure.add_subplot()
    for k, method in enumerate(methods):
        by_object = {object_name(m): m.JF_mean for m in summaries[method].per_object}
        values = [by_object.get(name, 0.0) for name in objects] + [summaries[method].JF_mean]
        axes.bar([g + (k - (len(methods) - 1) / 2) * width for g in range(len(groups))], values, width, label=method)
    axes.set_xticks(list(range(len(groups))), groups, rotation=60, ha="right", fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("J&F-Mean")
    axes.set_title(title or "J&F by method")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars may reach any height
    return save_figure(figure, Path(path))


# ----------------------------------------------------------------------------------------------------------- bundles


def write_report(summary: Summary, out_dir: str | os.PathLike[str], title: str = "") -> list[Path]:
    """CSVs and plots of one method into ``out_dir``; returns the files written."""
    out_dir = Path(out_dir)
    csvs = write_csvs(summary, out_dir)
    return [
        *csvs,
        plot_per_sequence(summary, out_dir / JF_PLOT, title),
        plot_per_frame_j(summary, out_dir / J_FRAMES_PLOT, title),
    ]


def write_comparison(summaries: Mapping[str, Summary], out_dir: str | os.PathLike[str], title: str = "") -> list[Path]:
    """``comparison.csv`` (a global row per method) and ``comparison.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [(name, summary.as_dict()) for name, summary in summaries.items()]
    table = _write_csv(out_dir / COMPARISON_CSV, "Method", rows)
    return [table, plot_comparison(summaries, out_dir / COMPARISON_PLOT, title)]
