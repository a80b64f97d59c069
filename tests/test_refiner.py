"""The classical engine's learned refiner: its cues, its untrained behaviour, and the shipped weights on real frames
of train sequences it never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eval.datasets import Davis2016
from eval.train_refiner import HOLDOUT, SEED, perturbed_examples
from vos.engines.classical import ClassicalEngine
from vos.engines.refiner import CHANNELS, WEIGHTS, RefinerNet, cues, object_probability, shipped_net


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_cues_are_bounded_and_the_distance_changes_sign_at_the_prior() -> None:
    prior = _disc((60, 80), (30, 40), 15)
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, prior.shape, dtype=np.uint8)
    inputs = cues(gray, prior, rng.normal(0, 30, prior.shape), rng.normal(0, 30, prior.shape), reach=5.0)
    assert inputs.shape == (CHANNELS, *prior.shape) and inputs.dtype == np.float32
    assert np.abs(inputs).max() <= 3.0
    assert np.array_equal(inputs[0] > 0.5, prior)
    assert (inputs[1][prior] > 0).all() and (inputs[1][~prior] < 0).all()
    assert not cues(gray, prior, np.zeros(prior.shape), None, reach=5.0)[4].any()  # no motion cue: zeros


def test_a_net_with_zero_weights_keeps_the_prior() -> None:
    net = RefinerNet()
    for parameter in net.parameters():
        torch.nn.init.zeros_(parameter)
    prior = _disc((60, 80), (30, 40), 15)
    inputs = cues(np.full(prior.shape, 128, np.uint8), prior, np.zeros(prior.shape), None, reach=5.0)
    assert np.array_equal(object_probability(inputs, net.eval()) > 0.5, prior)


def test_shipped_weights_are_small_and_load() -> None:
    assert WEIGHTS.stat().st_size < 5 * 2**20
    assert sum(p.numel() for p in shipped_net().parameters()) < 20_000


def _bear_crops(davis16_root: Path) -> list[np.ndarray]:
    """The cues of two odd-sized crops of bear's frame 0 around its truth."""
    sequence = Davis2016(davis16_root, split="train", sequences=["bear"]).sequence("bear")
    gray = np.ascontiguousarray(sequence.image(0)[..., 1])
    truth = sequence.annotation(0) > 0
    rows, columns = np.nonzero(truth)
    top, left = rows.min(), columns.min()
    return [cues(gray[top:top + height, left:left + width], truth[top:top + height, left:left + width],
                 np.zeros((height, width)), None, reach=9.6) for height, width in ((101, 157), (77, 233))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padding_a_crop_for_kernel_reuse_leaves_its_probabilities_unchanged(davis16_root: Path,
                                                                           dtype: torch.dtype) -> None:
    """object_probability pads crops to sizes that repeat; the padding must act as each convolution's own zero
    padding, so the crop's probabilities are the net's on the crop alone, in either precision."""
    net = shipped_net(dtype)
    for inputs in _bear_crops(davis16_root):
        with torch.inference_mode():
            alone = torch.sigmoid(net(torch.from_numpy(inputs)[None].to(dtype)).float())[0, 0].numpy()
        padded = object_probability(inputs, net)
        assert padded.shape == inputs.shape[1:] and padded.dtype == np.float32
        assert np.abs(padded - alone).max() < 1e-5


def test_the_bf16_net_gives_the_fp32_nets_probabilities(davis16_root: Path) -> None:
    """Where the CPU has native bf16 the shipped net runs in it (see preferred_dtype): its probabilities must stay
    those of the fp32 weights, to a hundredth."""
    for inputs in _bear_crops(davis16_root):
        single = object_probability(inputs, shipped_net(torch.float32))
        half = object_probability(inputs, shipped_net(torch.bfloat16))
        assert np.abs(single - half).max() < 0.01


@pytest.mark.parametrize("sequence", HOLDOUT[2:4])
def test_refiner_corrects_perturbed_masks_on_sequences_it_never_saw(davis16_root: Path, sequence: str) -> None:
    """On a train sequence left out of training, the previous frames' truth perturbed as in training and moved by
    the engine: the refined crops are closer to the truth than the motion priors they started from."""
    dataset = Davis2016(davis16_root, split="train", sequences=[sequence])
    examples = perturbed_examples(ClassicalEngine(), dataset.sequence(sequence), np.random.default_rng(SEED))
    refined, priors = [], []
    for inputs, truth, prior in examples:
        mask, truth = object_probability(inputs.astype(np.float32)) > 0.5, truth.astype(bool)
        refined.append(np.count_nonzero(mask & truth) / max(1, np.count_nonzero(mask | truth)))
        priors.append(np.count_nonzero(prior.astype(bool) & truth) / max(1, np.count_nonzero(prior | truth)))
    assert np.mean(refined) > np.mean(priors) + 0.01, (np.mean(refined), np.mean(priors))
