"""Reading SEEM checkpoints and loading them strictly (spec §10, §12 pitfall 16).

The released ``seem_focal{t,l}_v1.pt`` files are a flat ``name -> tensor`` mapping with no prefix. Training resume
files (``module_training_states.pt``) hold the same tensors under a ``'module'`` entry with a ``model.`` prefix, or
``module.model.`` under DDP; :func:`read_state_dict` normalises all of them to the unprefixed layout.

The official loader is ``strict=False`` and only logs mismatches, so a wrong architecture "loads" with random weights.
:func:`load_state_dict_strict` instead fails on any difference except the two persistent buffers whose presence in the
released files is unverified (``dilation_kernel``, ``criterion.empty_weight``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from vos.errors import CheckpointError

# Buffers that may or may not be in a file / in our module; their values are constants (ones; ones with 0.1 last).
OPTIONAL_KEYS: frozenset[str] = frozenset({"dilation_kernel", "criterion.empty_weight"})
# Wrappers that hold the state dict inside a bigger checkpoint dict ('module' = the official trainer's resume file).
_WRAPPER_KEYS = ("module", "model", "state_dict")
# Prefixes stripped when *every* key carries them (DDP 'module.', BaseModel 'model.').
_STRIPPABLE_PREFIXES = ("module.", "model.")
_MAX_LISTED = 10
_UNREADABLE = "corrupt, truncated or not a tensor file"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file on CPU and return an unprefixed ``name -> tensor`` dict (in file order).

    Accepts the official flat files, ``{'module': ...}`` / ``{'model': ...}`` / ``{'state_dict': ...}`` wrappers and
    ``model.`` / ``module.model.`` / ``module.`` key prefixes. Raises :class:`CheckpointError` when the file is missing,
    unreadable, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    obj = _torch_load(path)
    state = _unwrap(obj, path)
    return strip_common_prefixes(state)


def _torch_load(path: Path) -> object:
    # weights_only: a checkpoint is data, never code. mmap avoids a second in-RAM copy of the 0.7-1.4 GB files.
    # The unpickler raises many exception types on corrupt input, so any failure becomes a CheckpointError.
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        if "mmap" not in str(exc):  # legacy (non-zip) files cannot be memory-mapped: those are retried below
            raise CheckpointError(f"cannot read checkpoint {path} ({_UNREADABLE}): {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path} ({_UNREADABLE}): {exc!r}") from exc


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if _is_tensor_dict(obj):
        return OrderedDict(obj)  # type: ignore[arg-type]
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if _is_tensor_dict(obj.get(key)):
                return OrderedDict(obj[key])
    kind = f"dict with keys {_preview(list(obj))}" if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path} does not contain a state dict of tensors (found {kind})")


def strip_common_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Repeatedly strip ``module.`` / ``model.`` while every key starts with it (no official key does)."""
    out = OrderedDict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in _STRIPPABLE_PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = OrderedDict((k[len(prefix):], v) for k, v in out.items())
                changed = True
    return out


def sub_state_dict(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix`` with the prefix removed, e.g. ``sem_seg_head.predictor.lang_encoder.``."""
    return OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))


def _preview(keys: Iterable[str], limit: int = _MAX_LISTED) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... (+{len(keys) - limit} more)' if len(keys) > limit else ''}]"


def compare_state_dicts(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    optional: Iterable[str] = OPTIONAL_KEYS,
) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, mis-shaped)`` of ``given`` against ``expected``; mis-shaped entries are
    ``"key: checkpoint [..] vs model [..]"``. Keys in ``optional`` are never reported as missing or unexpected."""
    optional = set(optional)
    missing = [k for k in expected if k not in given and k not in optional]
    unexpected = [k for k in given if k not in expected and k not in optional]
    mis_shaped = [
        f"{k}: checkpoint {list(given[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in given and tuple(given[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, mis_shaped


def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    optional: Iterable[str] = OPTIONAL_KEYS,
) -> None:
    """Copy ``state_dict`` into ``module``, requiring identical names and shapes.

    Only the keys in ``optional`` (by default ``dilation_kernel`` and ``criterion.empty_weight``) may be missing from
    the file (the module keeps its own constant value) or present without a counterpart in the module (ignored).
    Any other difference raises :class:`CheckpointError` listing missing / unexpected / mis-shaped keys. Dtypes are
    cast to the module's (e.g. an fp16 file into an fp32 model).
    """
    expected = module.state_dict()
    missing, unexpected, mis_shaped = compare_state_dicts(expected, state_dict, optional)
    if missing or unexpected or mis_shaped:
        raise CheckpointError(_mismatch_message(type(module).__name__, missing, unexpected, mis_shaped))
    usable = {k: v for k, v in state_dict.items() if k in expected}
    module.load_state_dict(usable, strict=False)


def _mismatch_message(name: str, missing: list[str], unexpected: list[str], mis_shaped: list[str]) -> str:
    parts = [f"checkpoint does not match {name}:"]
    if missing:
        parts.append(f"{len(missing)} missing key(s) {_preview(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) {_preview(unexpected)}")
    if mis_shaped:
        parts.append(f"{len(mis_shaped)} mis-shaped key(s) {_preview(mis_shaped)}")
    if missing and unexpected and not mis_shaped:
        parts.append("(wrong model variant, or a prefix that was not stripped?)")
    return " ".join(parts[:1]) + " " + "; ".join(parts[1:])
