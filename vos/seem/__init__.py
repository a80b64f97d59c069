"""SEEM v1 re-implementation (model, decoder, prompts).

Public names are imported lazily so that ``import vos.seem`` stays cheap (no torch import until a name is used):

* `load_seem`, `build_seem`, `SeemModel` and the result types `ImageFeatures`, `SpatialResult`, `GroundingResult`,
  `SegmentationResult`, `PanopticSegment`, `upsample_logits`, `prev_mask_from_binary` (from `vos.seem.model`);
* `SeemConfig`, `DecoderConfig` (from `vos.seem.config`);
* `PromptTokens`, `GroundingTokens`, `DecoderOutput`, `Prediction` (from `vos.seem.decoder`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_seem": "vos.seem.model",
    "build_seem": "vos.seem.model",
    "SeemModel": "vos.seem.model",
    "ImageFeatures": "vos.seem.model",
    "SpatialResult": "vos.seem.model",
    "GroundingResult": "vos.seem.model",
    "SegmentationResult": "vos.seem.model",
    "PanopticSegment": "vos.seem.model",
    "upsample_logits": "vos.seem.model",
    "prev_mask_from_binary": "vos.seem.model",
    "SeemConfig": "vos.seem.config",
    "DecoderConfig": "vos.seem.config",
    "PromptTokens": "vos.seem.decoder",
    "GroundingTokens": "vos.seem.decoder",
    "DecoderOutput": "vos.seem.decoder",
    "Prediction": "vos.seem.decoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vos.seem' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
