"""The ``seem`` engine on real DAVIS frames with the real model and the official tiny fixture weights.

Random tiny weights make masks meaningless as segmentations, so these tests check the engine's mechanics: every
prompt path reaches the model, the memory prompt is what drives propagation, batching and seeding change nothing,
and absence / re-acquisition follow the model's scores. Frames are encoded at a 256-pixel short side for speed.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from vos.cli import main
from vos.engine import VideoFrame, create_engine
from vos.engines.seem import SeemEngine
from vos.errors import VosError
from vos.masks import read_label_png
from vos.prompts import Box, ObjectPrompt, Point, Reference, Scribble
from vos.seem.config import SeemConfig
from vos.seem.decoder import select_spatial_masks
from vos.seem.model import SeemModel, load_seem
from vos.tracker import track
from vos.video import open_video, read_image

SEQUENCE = "dog"
RESOLUTION = 256
TEXTS = ("a dog", "the grass", "a red car", "the sky")


@pytest.fixture(scope="module")
def tiny_model(seem_fixtures: Path) -> SeemModel:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    config = SeemConfig.from_official_yaml(seem_fixtures / "tiny_config.yaml")
    return load_seem(seem_fixtures / "tiny_weights.pt", config, vocabulary=False)


@pytest.fixture(scope="module")
def clip(davis16_root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The first 3 frames of the sequence and the object's mask on frame 0."""
    frames = [read_image(davis16_root / "JPEGImages" / "480p" / SEQUENCE / f"{i:05d}.jpg") for i in range(3)]
    return frames, read_label_png(davis16_root / "Annotations" / "480p" / SEQUENCE / "00000.png") > 0


def _engine(model: SeemModel, **options) -> SeemEngine:
    engine = create_engine("seem", weights=model, resolution=RESOLUTION, **options)
    assert isinstance(engine, SeemEngine)
    return engine


def _prompts(frames: list[np.ndarray], mask: np.ndarray) -> dict[str, ObjectPrompt]:
    ys, xs = np.nonzero(mask)
    cx, cy = float(xs.mean()), float(ys.mean())
    return {
        "mask": ObjectPrompt(object_id=1, mask=mask),
        "points": ObjectPrompt(object_id=1, points=[Point(x=cx, y=cy), Point(x=5, y=5, positive=False)]),
        "box": ObjectPrompt(object_id=1, box=Box(x0=xs.min(), y0=ys.min(), x1=xs.max(), y1=ys.max())),
        "scribble": ObjectPrompt(object_id=1, scribbles=[Scribble(lines=[[(cx - 20, cy), (cx + 20, cy)]])]),
        "text": ObjectPrompt(object_id=1, text="a dog"),
        "reference": ObjectPrompt(object_id=1, reference=Reference(image=frames[0], mask=mask)),
        "text+points": ObjectPrompt(object_id=1, text="a dog", points=[Point(x=cx, y=cy)]),
    }


def _frame(index: int, image: np.ndarray) -> VideoFrame:
    return VideoFrame(index, image)


def _start(engine: SeemEngine, frames: list[np.ndarray], prompts: list[ObjectPrompt]):
    """Prompt every object on frame 0 and start a sweep there: (sweep, object states, frame-0 results)."""
    states = {p.object_id: engine.new_object(p.object_id) for p in prompts}
    first = {p.object_id: engine.add_prompt(_frame(0, frames[0]), states[p.object_id], p, None) for p in prompts}
    sweep = engine.start_propagation()
    sweep.step(_frame(0, frames[0]), states, {i: r.mask for i, r in first.items()})
    return sweep, states, first


@pytest.mark.parametrize("kind", ["mask", "points", "box", "scribble", "text", "reference", "text+points"])
def test_every_prompt_kind_gives_a_mask_through_the_model(tiny_model, clip, kind) -> None:
    frames, mask = clip
    engine = _engine(tiny_model, absent_threshold=0.0)  # absence is tested on its own below
    prompt = _prompts(frames, mask)[kind]
    first = engine.add_prompt(_frame(0, frames[0]), engine.new_object(1), prompt, None)
    assert first.mask.shape == mask.shape and first.present and 0.0 <= first.score <= 1.0
    if kind == "box":
        box = prompt.box
        ys, xs = np.nonzero(first.mask)
        assert xs.min() >= box.x0 - 4 and xs.max() <= box.x1 + 4 and ys.min() >= box.y0 - 4 and ys.max() <= box.y1 + 4


def test_text_chooses_among_the_candidates_of_a_spatial_prompt(tiny_model, clip) -> None:
    """The same click with different texts picks different candidates."""
    frames, mask = clip
    prompt = _prompts(frames, mask)["text+points"]
    engine = _engine(tiny_model, absent_threshold=0.0)
    masks = [engine.add_prompt(_frame(0, frames[0]), engine.new_object(1), prompt.model_copy(update={"text": t}),
                               None).mask for t in TEXTS]
    assert any(not np.array_equal(masks[0], m) for m in masks[1:])


def test_a_correction_feeds_the_current_mask_to_the_decoder(tiny_model, clip) -> None:
    """The same clicks with and without the current mask (SEEM's memory prompt) give different masks."""
    frames, mask = clip
    engine = _engine(tiny_model, absent_threshold=0.0)
    prompt = _prompts(frames, mask)["points"]
    fresh = engine.add_prompt(_frame(0, frames[0]), engine.new_object(1), prompt, None).mask
    corrected = engine.add_prompt(_frame(0, frames[0]), engine.new_object(1), prompt, ~mask).mask
    assert not np.array_equal(fresh, corrected)
    # negative clicks alone correct the current mask (it stands in for the positive prompt)
    negative = ObjectPrompt(object_id=1, points=[Point(x=5, y=5, positive=False)])
    assert engine.add_prompt(_frame(0, frames[0]), engine.new_object(1), negative, mask).mask.shape == mask.shape
    with pytest.raises(VosError, match="only negative"):
        engine.add_prompt(_frame(0, frames[0]), engine.new_object(1), negative, None)


def test_the_memory_prompt_drives_propagation(tiny_model, clip) -> None:
    """The engine's frame-1 mask is the decoder output for its memory, and another memory changes it."""
    frames, mask = clip
    engine = _engine(tiny_model, propagation="reference", absent_threshold=0.0)
    sweep, states, _ = _start(engine, frames, [ObjectPrompt(object_id=1, mask=mask)])
    state = sweep.tracks[1]
    memory0 = state.memory.clone()
    sweep.step(_frame(1, frames[1]), states, {})
    with torch.inference_mode():
        features = tiny_model.encode_image(torch.from_numpy(frames[1]).permute(2, 0, 1)[None], short_side=RESOLUTION)

        def decode(prev_mask: torch.Tensor) -> torch.Tensor:
            out = tiny_model.predictor(features.multi_scale, features.mask_features, prompt=state.anchor,
                                       prev_mask=prev_mask[None, None], query_indices=state.query_indices[None],
                                       include_object_queries=False)
            return select_spatial_masks(out.final, 3).masks[0, 0]

        same, flipped = decode(memory0), decode(-memory0)
    torch.testing.assert_close(sweep.tracks[1].memory, same, atol=1e-4, rtol=1e-4)
    assert (same - flipped).abs().max() > 1e-3 and ((same > 0) != (flipped > 0)).any()


def test_objects_decoded_together_equal_objects_decoded_alone(tiny_model, clip) -> None:
    frames, mask = clip
    prompts = _prompts(frames, mask)
    two = [prompts["mask"], prompts["points"].model_copy(update={"object_id": 2})]
    engine = _engine(tiny_model, absent_threshold=0.0)  # one engine: sweeps share nothing
    together, together_states, _ = _start(engine, frames, two)
    alone = [_start(engine, frames, [prompt]) for prompt in two]
    together.step(_frame(1, frames[1]), together_states, {})
    for (sweep, states, _), prompt in zip(alone, two):
        sweep.step(_frame(1, frames[1]), states, {})
        torch.testing.assert_close(together.tracks[prompt.object_id].memory, sweep.tracks[prompt.object_id].memory,
                                   atol=1e-4, rtol=1e-4)


def test_overlapping_objects_get_one_object_per_pixel(tiny_model, clip) -> None:
    frames, mask = clip
    prompts = _prompts(frames, mask)
    engine = _engine(tiny_model, absent_threshold=0.0)
    second = prompts["scribble"].model_copy(update={"object_id": 2})
    sweep, states, _ = _start(engine, frames, [prompts["points"], second])
    results = sweep.step(_frame(1, frames[1]), states, {})
    assert not (results[1].mask & results[2].mask).any()
    assert results[1].present and results[2].present


def test_an_object_that_disappears_is_reported_absent_and_reacquired_from_its_reference(tiny_model, clip) -> None:
    """Frame 1 goes black (say the lens is covered): the memory-driven mask no longer looks like the dog, the score
    falls below the default threshold and the dog is reported absent. On frame 2 it is searched for from its
    anchor alone, exactly as a fresh engine given the reference finds it, not from the stale memory."""
    frames, mask = clip
    black = np.zeros_like(frames[0])
    engine = _engine(tiny_model)
    sweep, states, first = _start(engine, frames, [ObjectPrompt(object_id=1, mask=mask)])
    assert first[1].present
    lost = sweep.step(_frame(1, black), states, {})[1]
    assert not lost.present and lost.score < engine.absent_threshold and sweep.tracks[1].memory is None
    back = sweep.step(_frame(2, frames[2]), states, {})[1]

    reference = ObjectPrompt(object_id=1, reference=Reference(image=frames[0], mask=mask))
    fresh = _engine(tiny_model).add_prompt(_frame(2, frames[2]), engine.new_object(1), reference, None)
    assert back.present and back.score >= engine.absent_threshold
    assert back.score == pytest.approx(fresh.score, abs=1e-5) and (back.mask != fresh.mask).mean() < 1e-4

    drifting = _engine(tiny_model, absent_threshold=0.0)  # the same video with the absence test switched off
    sweep2, states2, _ = _start(drifting, frames, [ObjectPrompt(object_id=1, mask=mask)])
    sweep2.step(_frame(1, black), states2, {})
    sweep2.step(_frame(2, frames[2]), states2, {})
    assert (sweep2.tracks[1].memory - sweep.tracks[1].memory).abs().max() > 1e-3


def test_same_seed_same_masks_and_another_seed_other_spatial_queries(tiny_model, clip) -> None:
    frames, mask = clip
    prompt = _prompts(frames, mask)["points"]
    runs = []
    for seed in (3, 3, 4):
        engine = _engine(tiny_model, seed=seed, absent_threshold=0.0)
        sweep, states, first = _start(engine, frames, [prompt])
        second = sweep.step(_frame(1, frames[1]), states, {})
        runs.append(([first[1].mask, second[1].mask], [first[1].score, second[1].score], sweep.tracks[1]))
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][0], runs[1][0])) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][2].query_indices, runs[2][2].query_indices)
    assert not torch.equal(runs[0][2].memory, runs[2][2].memory)


def test_track_drives_the_engine_over_a_davis_sequence(tiny_model, davis16_root, tmp_path) -> None:
    clip_dir = _short_clip(davis16_root, tmp_path, 3)
    label_map = read_label_png(davis16_root / "Annotations" / "480p" / SEQUENCE / "00000.png")
    prompts = [ObjectPrompt(object_id=1, mask=label_map > 0)]
    with open_video(clip_dir) as video:
        results = list(track(video, _engine(tiny_model), prompts))
    assert [r.index for r in results] == [0, 1, 2]
    assert np.array_equal(results[0].objects[1].mask, label_map > 0)
    assert all(r.objects[1].mask.shape == (480, 854) for r in results)


def test_vos_track_cli_runs_the_tiny_checkpoint(seem_fixtures, davis16_root, tmp_path, capsys) -> None:
    clip_dir = _short_clip(davis16_root, tmp_path, 2)
    out = tmp_path / "out"
    code = main(["track", str(clip_dir), "--engine", "seem", "--weights", str(seem_fixtures / "tiny_weights.pt"),
                 "--variant", str(seem_fixtures / "tiny_config.yaml"), "--resolution", str(RESOLUTION),
                 "--label-map", str(davis16_root / "Annotations" / "480p" / SEQUENCE / "00000.png"),
                 "--out", str(out), "--no-overlay"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png"]


def test_named_weights_are_downloaded_and_fail_clearly_without_network(davis16_root, tmp_path, monkeypatch,
                                                                        capsys) -> None:
    monkeypatch.setenv("SEEM_VOS_HOME", str(tmp_path / "home"))  # an empty weights cache
    clip_dir = _short_clip(davis16_root, tmp_path, 1)
    code = main(["track", str(clip_dir), "--engine", "seem", "--weights", "seem-focalt", "--point", "100,100",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot download" in err and "No network access?" in err, err


@pytest.mark.parametrize("options", [{"propagation": "flow"}, {"precision": "fp16"}, {"absent_threshold": 2.0},
                                     {"resolution": 8}, {"weights": "no-such-checkpoint"}])
def test_bad_options_are_clear_errors(tiny_model, options) -> None:
    with pytest.raises(VosError):
        create_engine("seem", **{"weights": tiny_model, **options})


def _short_clip(davis16_root: Path, tmp_path: Path, count: int) -> Path:
    clip_dir = tmp_path / f"{SEQUENCE}-{count}"
    clip_dir.mkdir()
    for i in range(count):
        name = f"{i:05d}.jpg"
        (clip_dir / name).symlink_to(davis16_root / "JPEGImages" / "480p" / SEQUENCE / name)
    return clip_dir
