"""Options of the ``seem`` engine, apart from the engine so that listing them (CLI flags, API schema, submission
checks) does not import torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from vos.engine import EngineOptions


class SeemOptions(EngineOptions):
    """Options of the ``seem`` engine (SEEM v1 weights)."""

    weights: str | SkipJsonSchema[Path] | SkipJsonSchema[Any] = Field(
        "seem-focalt", description=("checkpoint: a registry name (seem-focalt, seem-focall; downloaded on first use) "
                                    "or a checkpoint file"))
    variant: str | SkipJsonSchema[Path] | SkipJsonSchema[Any] | None = Field(None, description=(
        "architecture of a checkpoint file: focalt (default), focall or an official config YAML"))
    device: str | None = Field(None, description="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    precision: Literal["fp32", "bf16", "fp16"] | None = Field(None, description=(
        "model precision (default fp32; fp16 on CUDA only)"))
    resolution: int = Field(512, ge=32, le=2048, description="model input short side in pixels")
    propagation: Literal["reference", "click", "both"] = Field("both", description=(
        "spatial prompt that follows an object from frame to frame: its anchor tokens, a click at the interior of "
        "its previous mask, or both"))
    absent_threshold: float = Field(0.5, ge=0.0, le=1.0, description=(
        "score below which a followed object is reported absent"))
    seed: int = Field(0, ge=0, description="random seed of each object's query choice (results are reproducible)")

    @field_validator("weights", "variant", mode="before")
    @classmethod
    def _model_objects(cls, value: Any, info: ValidationInfo) -> Any:
        """Library callers may pass a `SeemConfig` (random weights) or a ready `SeemModel` instead of a name."""
        if value is None or isinstance(value, (str, Path)):
            return value
        from vos.seem.config import SeemConfig  # a model object exists, so torch is imported already
        from vos.seem.model import SeemModel

        allowed = (SeemConfig, SeemModel) if info.field_name == "weights" else (SeemConfig,)
        if not isinstance(value, allowed):
            raise ValueError(f"expected a name or file path, got {type(value).__name__}")
        return value

    @model_validator(mode="after")
    def _fp16_on_cuda(self) -> SeemOptions:
        if self.precision == "fp16" and not (self.device or "").startswith("cuda"):
            raise ValueError("fp16 runs on CUDA only; use bf16 or fp32 on the CPU")
        return self
