"""The weight-free engine's one learned part: a tiny convolutional net that decides each object's mask on a frame
from object-agnostic cues around its motion prior.

Inputs, on a crop around the motion prior at working resolution (one channel each, see :func:`cues`):

- the motion prior (the previous mask moved to this frame) and its signed distance to the prior's boundary;
- the log-ratio of the object's and its surroundings' colour models (GMMs learnt on the prompt frames);
- the grey image (the net finds the edges itself);
- the motion cue: how much more a pixel moves like the object than like the camera (0 when the camera's motion is
  unknown or the same as the object's).

None of them says what the object is, so the net carries over to objects it never saw. It replaces GrabCut in the
band around the prior: a few small dilated convolutions (receptive field 33 pixels) cost a few milliseconds on a crop.
It was trained by ``eval/train_refiner.py`` (fixed seed, 10-20 minutes on one CPU core) on 24 of the 30 DAVIS 2016
train sequences, with the previous ground-truth mask, perturbed, as the previous mask; the six others were left out to
check it. The weights ship next to this module (``refiner.npz``, 5.8 thousand weights, 26 kB).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from vos.engines.regions import bounds, within

WEIGHTS = Path(__file__).with_name("refiner.npz")
CHANNELS = 5
_DILATIONS = (1, 2, 4, 8, 1)
_WIDTH = 12
_CROP_REACH = 3.0  # the net decides pixels within this many band widths of the prior
_DISTANCE_CLIP = 3.0  # signed distances are in band widths, clipped to this
_LOG_RATIO_CLIP = 10.0
_MOTION_CLIP = 5.0  # pixels
_SIZE_STEP = 16  # crops are padded to a multiple of this many pixels (see object_probability)


class RefinerNet(nn.Module):
    """Dilated 3x3 convolutions over the cues; the output is a logit added to the clipped signed distance (so an
    untrained net reproduces the prior)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = CHANNELS
        for dilation in _DILATIONS:
            layers += [nn.Conv2d(channels, _WIDTH, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            channels = _WIDTH
        layers.append(nn.Conv2d(channels, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor, extent: tuple[int, int] | None = None) -> torch.Tensor:
        """Logits for ``inputs`` [n, CHANNELS, h, w]. With ``extent`` (height, width), only that top-left part of the
        inputs is real and the rest is zero padding: every layer's output is zeroed beyond it, so that the real part's
        logits are those of the real part alone (each convolution sees zeros past its edge, as its own padding)."""
        if extent is None:
            return self.body(inputs) + 2.0 * inputs[:, 1:2]
        height, width = extent
        features = inputs
        for layer in self.body:
            features = layer(features)
            if isinstance(layer, nn.ReLU):
                features[:, :, height:] = 0
                features[:, :, :, width:] = 0
        return features + 2.0 * inputs[:, 1:2]


def crop_around(prior: np.ndarray, reach: float) -> tuple[slice, slice]:
    """The part of the frame the net decides: within a few band widths of the (non-empty) prior."""
    return bounds(within(prior, _CROP_REACH * reach))


def cues(gray: np.ndarray, prior: np.ndarray, colour_log_ratio: np.ndarray, motion_cue: np.ndarray | None,
         reach: float) -> np.ndarray:
    """The net's input [CHANNELS, h, w] float32 on a crop: ``gray`` uint8, ``prior`` bool, ``colour_log_ratio``
    (object vs surroundings, float), ``motion_cue`` (pixels, positive where a pixel moves like the object rather
    than the camera) or None."""
    prior_u8 = prior.astype(np.uint8)
    inside = cv2.distanceTransform(prior_u8, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - prior_u8, cv2.DIST_L2, 3)
    # Each channel is written into the float32 result as it is computed: stacking them first went through float64
    # (the colour table's type), a third of the cues' time.
    channels = np.empty((CHANNELS, *prior.shape), np.float32)
    channels[0] = prior
    channels[1] = np.clip((inside - outside) / reach, -_DISTANCE_CLIP, _DISTANCE_CLIP)
    channels[2] = np.clip(colour_log_ratio, -_LOG_RATIO_CLIP, _LOG_RATIO_CLIP) / 5.0
    channels[3] = gray.astype(np.float32) / 128.0 - 1.0
    if motion_cue is None:
        channels[4] = 0.0
    else:
        channels[4] = np.clip(motion_cue, -_MOTION_CLIP, _MOTION_CLIP) / _MOTION_CLIP
    return channels


def preferred_dtype() -> torch.dtype:
    """The precision the shipped net runs in: bf16 where the CPU computes it natively (AVX-512 BF16 or AMX), fp32
    elsewhere (there bf16 convolutions are emulated, and slower than fp32).

    In bf16 the net takes half the time (a 128x128 crop: 1.8 against 4.0 ms; bear with five objects, 36.7 against
    48.9 ms per frame in bench/bench_tracking.py) for the same masks: DAVIS 2016 J&F train 0.728 against 0.730 in
    fp32, val 0.651 against 0.652, schoolgirls 0.509 against 0.499 (its convolutions accumulate in fp32; inputs,
    weights and activations are rounded to 8 significant bits)."""
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", bool)() or getattr(torch.cpu, "_is_amx_tile_supported",
                                                                                 bool)()
    return torch.bfloat16 if native else torch.float32


def shipped_net(dtype: torch.dtype | None = None) -> RefinerNet:
    """The trained net in ``dtype`` (default: :func:`preferred_dtype`), loaded once per precision."""
    return _load_shipped(dtype or preferred_dtype())


@lru_cache(maxsize=2)
def _load_shipped(dtype: torch.dtype) -> RefinerNet:
    net = RefinerNet()
    with np.load(WEIGHTS) as weights:
        net.load_state_dict({name: torch.from_numpy(weights[name]) for name in weights.files})
    # channels-last runs these thin convolutions about twice as fast on CPU
    return net.eval().to(dtype=dtype, memory_format=torch.channels_last)


def object_probability(inputs: np.ndarray, net: RefinerNet | None = None) -> np.ndarray:
    """Probability (float32 [h, w]) that each pixel of the crop whose cues are ``inputs`` is the object's, by ``net``
    (the shipped one when None) in its own precision."""
    net = shipped_net() if net is None else net
    # Crops change size every frame, and oneDNN builds its convolution kernels for each new input size (about 2 ms,
    # as much as the whole net on a 100-pixel crop). Padded to a multiple of _SIZE_STEP, sizes repeat and the built
    # kernels are reused.
    height, width = inputs.shape[1:]
    padded = np.zeros((CHANNELS, -(-height // _SIZE_STEP) * _SIZE_STEP, -(-width // _SIZE_STEP) * _SIZE_STEP),
                      np.float32)
    padded[:, :height, :width] = inputs
    dtype = next(net.parameters()).dtype
    with torch.inference_mode(), _one_thread():
        batch = torch.from_numpy(padded)[None].to(dtype).contiguous(memory_format=torch.channels_last)
        logits = net(batch, (height, width))
        return torch.sigmoid(logits[0, 0, :height, :width].float()).numpy()


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on the calling thread only: these thin convolutions gain little from a second thread, and when the
    other core is busy (the engine's next-frame flow, another process) a thread waiting for it makes the net about
    5 times slower (bear's crops on 2 cores, another process busy: 12 ms per frame on one thread, 60 ms on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
