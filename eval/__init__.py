"""Evaluation of video object segmentation: DAVIS J/F metrics and dataset readers (DAVIS 2016/2017, YouTube-VOS)."""

from eval.datasets import Davis2016, Davis2017, FirstAppearance, VosDataset, VosSequence, YouTubeVOS, open_dataset
from eval.metrics import (
    DEFAULT_BOUND_TH,
    SequenceMetrics,
    Statistics,
    Summary,
    boundary_f_measure,
    boundary_map,
    evaluate_sequence,
    region_similarity,
    sequence_metrics,
    statistics,
    summarize,
)

__all__ = [
    "Davis2016",
    "Davis2017",
    "FirstAppearance",
    "VosDataset",
    "VosSequence",
    "YouTubeVOS",
    "open_dataset",
    "DEFAULT_BOUND_TH",
    "SequenceMetrics",
    "Statistics",
    "Summary",
    "boundary_f_measure",
    "boundary_map",
    "evaluate_sequence",
    "region_similarity",
    "sequence_metrics",
    "statistics",
    "summarize",
]
