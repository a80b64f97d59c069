"""The classical engine through ``track()`` on real DAVIS frames."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pytest

from eval.metrics import region_similarity
from vos.engine import VideoFrame, create_engine
from vos.engines.classical import ClassicalEngine, _gmm_log_likelihood
from vos.errors import EngineError, UnsupportedPromptError
from vos.masks import read_label_png
from vos.prompts import Box, ObjectPrompt, Point, Reference
from vos.tracker import track
from vos.video import open_video, read_image

SEQUENCE, N_FRAMES = "car-roundabout", 25


def _gt(root: Path, sequence: str, n: int) -> np.ndarray:
    paths = sorted((root / "Annotations" / "480p" / sequence).glob("*.png"))[:n]
    return np.stack([read_label_png(p) > 0 for p in paths])


def _run(root: Path, sequence: str, prompts: list[ObjectPrompt], n: int,
         **options: object) -> list[dict[int, np.ndarray]]:
    engine = create_engine("classical", **options)
    with open_video(root / "JPEGImages" / "480p" / sequence) as video:
        return [{i: r.mask for i, r in result.objects.items()} for result in islice(track(video, engine, prompts), n)]


def test_tracking_beats_plain_flow_warping(davis16_root: Path, shared_dir: Path) -> None:
    gt = _gt(davis16_root, SEQUENCE, N_FRAMES)
    prompts = [ObjectPrompt(object_id=1, mask=gt[0])]
    masks = np.stack([frame[1] for frame in _run(davis16_root, SEQUENCE, prompts, N_FRAMES)])
    packed = np.load(shared_dir / "fixtures" / "davis_metrics" / "flow_masks_packbits.npz")[SEQUENCE][:N_FRAMES]
    baseline = np.unpackbits(packed, axis=-1, count=854).astype(bool)
    ours = float(np.mean(region_similarity(gt[1:], masks[1:])))
    flow = float(np.mean(region_similarity(gt[1:], baseline[1:])))
    assert ours > flow + 0.05, (ours, flow)
    assert ours > 0.8


def _flow_baseline(shared_dir: Path, sequence: str, n: int) -> np.ndarray:
    packed = np.load(shared_dir / "fixtures" / "davis_metrics" / "flow_masks_packbits.npz")[sequence][:n]
    return np.unpackbits(packed, axis=-1, count=854).astype(bool)


@pytest.mark.parametrize("sequence", ["dance-twirl", "libby"])
def test_panning_camera_keeps_the_object(davis16_root: Path, shared_dir: Path, sequence: str) -> None:
    # Both pan after a moving subject: without motion segmentation the dancer's mask stays on the floor and the
    # dog's on a fence post it runs behind (0.22 and 0.39 J here); plain flow warping scores 0.37 and 0.19.
    n = 40
    gt = _gt(davis16_root, sequence, n)
    masks = np.stack([frame[1] for frame in _run(davis16_root, sequence, [ObjectPrompt(object_id=1, mask=gt[0])], n)])
    ours = float(np.mean(region_similarity(gt[1:], masks[1:])))
    flow = float(np.mean(region_similarity(gt[1:], _flow_baseline(shared_dir, sequence, n)[1:])))
    assert ours > max(0.45, flow + 0.1), (ours, flow)


def test_colour_models_are_read_in_opencv_layout(davis16_root: Path) -> None:
    """GrabCut's GMMs, learnt on the swan and its surroundings, must tell the two apart when evaluated by us."""
    gt = _gt(davis16_root, "blackswan", 1)[0]
    bgr = cv2.imread(str(davis16_root / "JPEGImages" / "480p" / "blackswan" / "00000.jpg"))
    bg_model, fg_model = np.zeros((1, 65)), np.zeros((1, 65))
    labels = np.where(gt, cv2.GC_FGD, cv2.GC_BGD).astype(np.uint8)
    cv2.setRNGSeed(0)
    cv2.grabCut(bgr, labels, None, bg_model, fg_model, 1, cv2.GC_INIT_WITH_MASK)
    colours = bgr.reshape(-1, 3).astype(np.float64)
    says_object = (_gmm_log_likelihood(fg_model, colours) > _gmm_log_likelihood(bg_model, colours)).reshape(gt.shape)
    assert np.mean(says_object[gt]) > 0.9
    assert np.mean(~says_object[~gt]) > 0.9


def test_two_objects_never_overlap_and_scores_are_probabilities(davis16_root: Path) -> None:
    gt = _gt(davis16_root, "blackswan", 1)[0]
    ys, xs = np.nonzero(gt)
    # A second object sharing half the swan's box forces contested pixels.
    box = Box(x0=float(xs.min()), y0=float(ys.min()), x1=float((xs.min() + xs.max()) / 2), y1=float(ys.max()))
    prompts = [ObjectPrompt(object_id=1, mask=gt), ObjectPrompt(object_id=2, box=box)]
    engine = create_engine("classical")
    with open_video(davis16_root / "JPEGImages" / "480p" / "blackswan") as video:
        for result in islice(track(video, engine, prompts), 8):
            assert set(result.objects) == {1, 2}
            assert not (result.objects[1].mask & result.objects[2].mask).any()
            assert all(0.0 <= r.score <= 1.0 for r in result.objects.values())
            assert result.objects[1].present


def test_deterministic(davis16_root: Path) -> None:
    gt = _gt(davis16_root, "dog", 1)[0]
    ys, xs = np.nonzero(gt)
    box = Box(x0=float(xs.min()), y0=float(ys.min()), x1=float(xs.max()), y1=float(ys.max()))
    prompts = [ObjectPrompt(object_id=1, box=box)]
    first = _run(davis16_root, "dog", prompts, 6)
    second = _run(davis16_root, "dog", prompts, 6)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, second))


@pytest.mark.parametrize(
    "prompt",
    [
        ObjectPrompt(object_id=1, text="a black swan"),
        ObjectPrompt(object_id=1, reference=Reference(image=np.zeros((8, 8, 3), np.uint8), mask=np.ones((8, 8), bool))),
    ],
)
def test_text_and_reference_prompts_name_seem(prompt: ObjectPrompt) -> None:
    with pytest.raises(UnsupportedPromptError, match="seem"):
        ClassicalEngine().check_prompts([prompt])


def test_unsupported_prompt_fails_before_decoding(davis16_root: Path) -> None:
    with open_video(davis16_root / "JPEGImages" / "480p" / "blackswan") as video:
        with pytest.raises(UnsupportedPromptError, match="seem"):
            track(video, create_engine("classical"), [ObjectPrompt(object_id=1, text="swan")])


def test_bad_options_are_engine_errors() -> None:
    with pytest.raises(EngineError, match="flow_preset"):
        ClassicalEngine(flow_preset="slowest")
    with pytest.raises(EngineError, match="working_width"):
        ClassicalEngine(working_width=8)


def _first_frames_j(root: Path, sequence: str, prompt: ObjectPrompt, n: int) -> float:
    gt = _gt(root, sequence, n)
    masks = np.stack([frame[1] for frame in _run(root, sequence, [prompt], n)])
    return float(np.mean(region_similarity(gt, masks)))


# One click at the interior point, then tracking, over the first 25 frames (prompted frame included). Before the
# click used the next frames' motion, GrabCut took the road or the crowd: J 0.09 (car-turn), 0.02 (drift-turn) and
# 0.05 (motorbike) when this test was written; with it 0.85, 0.83 and 0.67.
@pytest.mark.parametrize("sequence", ["car-turn", "drift-turn", "motorbike"])
def test_click_protocol_tracks_the_clicked_object(davis16_root: Path, sequence: str) -> None:
    gt = _gt(davis16_root, sequence, 1)[0]
    depth = cv2.distanceTransform(gt.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(depth.argmax()), depth.shape)
    prompt = ObjectPrompt(object_id=1, points=[Point(x=float(x), y=float(y))])
    assert _first_frames_j(davis16_root, sequence, prompt, 25) > 0.6


# The tight ground-truth box, then tracking, over the first 25 frames. From the box's colours alone: J 0.40
# (kite-walk), 0.37 (hockey) and 0.02 (boat: the wake); with the box split by motion 0.81, 0.73 and 0.51. The
# learned refiner that replaced GrabCut in propagation gives the boat's white stern to the wake: 0.41 there.
@pytest.mark.parametrize(("sequence", "floor"), [("kite-walk", 0.45), ("hockey", 0.45), ("boat", 0.35)])
def test_box_protocol_tracks_the_boxed_object(davis16_root: Path, sequence: str, floor: float) -> None:
    ys, xs = np.nonzero(_gt(davis16_root, sequence, 1)[0])
    box = Box(x0=float(xs.min()), y0=float(ys.min()), x1=float(xs.max()), y1=float(ys.max()))
    assert _first_frames_j(davis16_root, sequence, ObjectPrompt(object_id=1, box=box), 25) > floor


# The swing's frame and the agility poles occlude the object; without re-detection the mask stays on the occluder
# (mean J 0.18 over swing's 60 frames and 0.13 over dog-agility's first 25 when this test was written); finding the
# object again by its colours gives 0.72 and 0.47.
@pytest.mark.parametrize(("sequence", "n", "floor"), [("swing", 60, 0.5), ("dog-agility", 25, 0.35)])
def test_object_is_found_again_after_an_occlusion(davis16_root: Path, sequence: str, n: int, floor: float) -> None:
    gt = _gt(davis16_root, sequence, n)
    masks = np.stack([frame[1] for frame in _run(davis16_root, sequence, [ObjectPrompt(object_id=1, mask=gt[0])], n)])
    assert float(np.mean(region_similarity(gt[1:], masks[1:]))) > floor


def test_a_lost_object_is_looked_for_among_what_moves_unlike_the_camera(davis16_root: Path) -> None:
    """scooter-gray's mask sticks to a pole and the hedge behind it after frame 12; parked scooters share the ridden
    one's colours, but only it moves against the panning camera. Over frames 21-29, mean J was 0.00 with colour-only
    re-detection and is 0.78 now."""
    n = 30
    gt = _gt(davis16_root, "scooter-gray", n)
    masks = np.stack([frame[1] for frame in _run(davis16_root, "scooter-gray", [ObjectPrompt(object_id=1, mask=gt[0])],
                                                 n)])
    assert float(np.mean(region_similarity(gt[21:], masks[21:]))) > 0.5


def test_an_object_moves_like_its_part_that_moves_unlike_the_camera(davis16_root: Path) -> None:
    """hockey's mask takes in some of the rink, which moves with the panning camera; while that was most of the mask
    the object's motion was fitted to it and the rink stayed. Over frames 30-44, mean J was 0.66 and is 0.87 now."""
    n = 45
    gt = _gt(davis16_root, "hockey", n)
    masks = np.stack([frame[1] for frame in _run(davis16_root, "hockey", [ObjectPrompt(object_id=1, mask=gt[0])], n)])
    assert float(np.mean(region_similarity(gt[30:], masks[30:]))) > 0.75


def test_a_part_coming_back_beyond_an_occluder_rejoins_the_mask(davis16_root: Path) -> None:
    """the swing's frame occludes the girl around frame 9 and she reappears beyond it, farther from the mask than motion
    segmentation used to look (2 band widths, now 6). Over frames 9-17, mean J was 0.16 and is 0.81 now."""
    n = 18
    gt = _gt(davis16_root, "swing", n)
    masks = np.stack([frame[1] for frame in _run(davis16_root, "swing", [ObjectPrompt(object_id=1, mask=gt[0])], n)])
    assert float(np.mean(region_similarity(gt[9:], masks[9:]))) > 0.6


def test_fortran_order_mask_prompt_is_tracked(davis16_root: Path) -> None:
    """Masks decoded from COCO RLE are column-major; the engine must take them like any other."""
    gt = _gt(davis16_root, "blackswan", 3)
    prompt = ObjectPrompt(object_id=1, mask=np.asfortranarray(gt[0]))
    masks = [frame[1] for frame in _run(davis16_root, "blackswan", [prompt], 3)]
    assert np.array_equal(masks[0], gt[0])
    assert float(np.mean(region_similarity(gt[1:], np.stack(masks[1:])))) > 0.85


@pytest.mark.parametrize("backward", [False, True])
def test_the_flow_computed_ahead_and_objects_in_parallel_change_nothing(davis16_root: Path, backward: bool) -> None:
    """A sweep that can read the next frame computes its flow ahead on another thread, and several objects are
    propagated two at a time; the masks must be those of a sweep that reads nothing ahead, in either direction."""
    sequence, n = "libby", 8
    frames = [read_image(p) for p in sorted((davis16_root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))[:n]]
    gt = _gt(davis16_root, sequence, n)
    order = list(range(n))[::-1] if backward else list(range(n))
    corner = np.zeros_like(gt[0])
    corner[:60, :80] = True  # a second object, so that objects are propagated in parallel

    def sweep(read: Callable[[int], np.ndarray] | None) -> list[dict[int, np.ndarray]]:
        engine = ClassicalEngine()
        states = {1: engine.new_object(1), 2: engine.new_object(2)}
        seeds = {1: gt[order[0]], 2: corner & ~gt[order[0]]}
        first = VideoFrame(order[0], frames[order[0]])
        for object_id, mask in seeds.items():
            engine.add_prompt(first, states[object_id], ObjectPrompt(object_id=object_id, mask=mask), None)
        propagation = engine.start_propagation()
        masks = []
        for step, index in enumerate(order):
            frame = VideoFrame(index, frames[index], None, read, n)
            results = propagation.step(frame, states, seeds if step == 0 else {})
            masks.append({i: r.mask for i, r in results.items()})
        return masks

    ahead, alone = sweep(frames.__getitem__), sweep(None)
    assert all(np.array_equal(a[i], b[i]) for a, b in zip(ahead, alone) for i in (1, 2))
    assert float(np.mean(region_similarity(gt[order[1:]], np.stack([m[1] for m in ahead[1:]])))) > 0.6
