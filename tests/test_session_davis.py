"""Sessions on real DAVIS frames: corrections, backward propagation, objects added and removed, SEEM sessions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from eval.runner import interior_point
from vos.engine import create_engine
from vos.masks import read_label_png
from vos.prompts import ObjectPrompt, Point
from vos.session import Session
from vos.video import ArrayVideo, open_video, read_image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _sequence(root: Path, name: str, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    frames = sorted((root / "JPEGImages" / "480p" / name).glob("*.jpg"))[:count]
    labels = sorted((root / "Annotations" / "480p" / name).glob("*.png"))[:count]
    return [read_image(p) for p in frames], [read_label_png(p) for p in labels]


@pytest.fixture(scope="module")
def classical():
    return create_engine("classical")


def _error_click(prediction: np.ndarray, truth: np.ndarray) -> Point:
    """A click at the interior point of the largest error region: positive on a missed part, negative on taken
    background (the simulated user of ``vos eval interactive``)."""
    count, components, stats, _ = cv2.connectedComponentsWithStats((prediction ^ truth).astype(np.uint8))
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    point = interior_point(components == largest)
    return point.model_copy(update={"positive": bool(truth[int(point.y), int(point.x)])})


@pytest.mark.parametrize("name", ["blackswan", "car-roundabout", "dog"])
def test_a_correction_click_raises_the_corrected_frames_iou(davis16_root: Path, classical, name: str) -> None:
    frames, labels = _sequence(davis16_root, name, 12)
    truth = [label > 0 for label in labels]
    with Session(classical, ArrayVideo(frames)) as session:
        session.add_prompt(ObjectPrompt(object_id=1, points=[interior_point(truth[0])]))
        list(session.propagate(0, "forward"))
        before = _iou(session.result(10, with_image=False).objects[1].mask, truth[10])
        click = _error_click(session.result(10, with_image=False).objects[1].mask, truth[10])
        corrected = session.add_prompt(ObjectPrompt(object_id=1, frame_index=10, points=[click]))
        after = _iou(corrected.objects[1].mask, truth[10])
    assert after > before, (before, after)


def test_backward_propagation_equals_forward_on_the_reversed_video(davis16_root: Path, classical) -> None:
    frames, labels = _sequence(davis16_root, "car-roundabout", 8)
    last = labels[-1] > 0
    with Session(classical, ArrayVideo(frames)) as backward, \
            Session(classical, ArrayVideo(frames[::-1])) as forward:
        backward.add_prompt(ObjectPrompt(object_id=1, frame_index=7, mask=last))
        forward.add_prompt(ObjectPrompt(object_id=1, frame_index=0, mask=last))
        back = {r.index: r.objects[1].mask for r in backward.propagate(7, "backward")}
        ahead = {7 - r.index: r.objects[1].mask for r in forward.propagate(0, "forward")}
    assert sorted(back) == sorted(ahead) == list(range(7))
    assert all(np.array_equal(back[t], ahead[t]) for t in back)
    assert _iou(back[0], labels[0] > 0) > 0.7  # and it tracks the car back to the first frame


def test_objects_added_over_time_and_removed_never_change_the_others(shared_dir: Path, classical) -> None:
    root = shared_dir / "data" / "davis17-lowres"
    if not (root / "JPEGImages" / "480p" / "schoolgirls").is_dir():
        pytest.skip(f"the multi-object sequence is not under {root}")
    frames, labels = _sequence(root, "schoolgirls", 16)
    with Session(classical, ArrayVideo(frames)) as session:
        history = []
        for object_id, start in ((1, 0), (2, 5), (3, 10), (4, 0)):
            session.add_prompt(ObjectPrompt(object_id=object_id, frame_index=start, mask=labels[start] == object_id))
            list(session.propagate(start, "both", [object_id]))
            history.append({r.index: {i: o.mask for i, o in r.objects.items()} for r in session.results(False)})
        for before, after, added in zip(history, history[1:], (2, 3, 4)):
            for t in range(len(frames)):
                for object_id, mask in before[t].items():
                    # an earlier object only loses pixels, and only to the object just added
                    assert not (after[t][object_id] & ~mask).any()
                    assert (mask & ~after[t][object_id] <= after[t][added]).all()
        session.remove_object(3)
        removed = {r.index: {i: o.mask for i, o in r.objects.items()} for r in session.results(False)}
    for t in range(len(frames)):
        assert sorted(removed[t]) == [1, 2, 4]
        assert all(np.array_equal(removed[t][i], history[-1][t][i]) for i in (1, 2, 4))


@pytest.fixture(scope="module")
def seem_engine(seem_fixtures: Path):
    from vos.seem.config import SeemConfig
    from vos.seem.model import load_seem

    config = SeemConfig.from_official_yaml(seem_fixtures / "tiny_config.yaml")
    model = load_seem(seem_fixtures / "tiny_weights.pt", config, vocabulary=False)
    return create_engine("seem", weights=model, resolution=256, absent_threshold=0.0)


def test_seem_sessions_prompt_correct_and_propagate_both_ways(davis16_root: Path, seem_engine) -> None:
    clip = davis16_root / "JPEGImages" / "480p" / "dog"
    mask = read_label_png(davis16_root / "Annotations" / "480p" / "dog" / "00002.png") > 0
    frames = [read_image(p) for p in sorted(clip.glob("*.jpg"))[:5]]
    with Session(seem_engine, ArrayVideo(frames)) as session:
        first = session.add_prompt(ObjectPrompt(object_id=1, frame_index=2, mask=mask))
        assert np.array_equal(first.objects[1].mask, mask)
        assert sorted(r.index for r in session.propagate(2, "both")) == [0, 1, 3, 4]
        assert session.objects[1].state.anchors.keys() == {2}
        corrected = session.add_prompt(ObjectPrompt(object_id=1, frame_index=4, points=[interior_point(mask)]))
        assert corrected.revision == 2 and session.objects[1].state.anchors.keys() == {2, 4}
        assert {r.index for r in session.propagate(4, "backward")} <= {3}  # it stops at the anchor on frame 2
        assert session.result(2, with_image=False).revision == 1
        assert all(r.objects[1].mask.shape == mask.shape for r in session.results(False))


def test_two_seem_sessions_share_one_engine(davis16_root: Path, seem_engine) -> None:
    def run(name: str) -> list[np.ndarray]:
        with open_video(davis16_root / "JPEGImages" / "480p" / name) as video, Session(seem_engine, video) as session:
            session.add_prompt(ObjectPrompt(object_id=1, mask=read_label_png(
                davis16_root / "Annotations" / "480p" / name / "00000.png") > 0))
            return [r.objects[1].mask for _, r in zip(range(3), session.propagate(0, "forward"))]

    alone = run("dog"), run("blackswan")
    with open_video(davis16_root / "JPEGImages" / "480p" / "dog") as dog, \
            open_video(davis16_root / "JPEGImages" / "480p" / "blackswan") as swan, \
            Session(seem_engine, dog) as a, Session(seem_engine, swan) as b:
        for session, name in ((a, "dog"), (b, "blackswan")):
            session.add_prompt(ObjectPrompt(object_id=1, mask=read_label_png(
                davis16_root / "Annotations" / "480p" / name / "00000.png") > 0))
        together = list(zip(*[(ra.objects[1].mask, rb.objects[1].mask)
                              for _, ra, rb in zip(range(3), a.propagate(0, "forward"), b.propagate(0, "forward"))]))
    for solo, shared in zip(alone, together):
        assert all(np.array_equal(x, y) for x, y in zip(solo, shared))


def test_a_seem_prompt_on_a_seen_frame_is_one_decoder_call(davis16_root: Path, seem_engine, monkeypatch) -> None:
    frames, labels = _sequence(davis16_root, "dog", 2)
    mask = labels[0] > 0
    model = seem_engine.model
    calls = {"encode_image": 0, "decode_prompt": 0}
    for name in calls:
        original = getattr(model, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(model, name, counted)
    with Session(seem_engine, ArrayVideo(frames)) as session:
        session.add_prompt(ObjectPrompt(object_id=1, mask=mask))
        assert calls == {"encode_image": 1, "decode_prompt": 0}
        session.add_prompt(ObjectPrompt(object_id=2, points=[interior_point(~mask)]))
    assert calls == {"encode_image": 1, "decode_prompt": 1}  # the frame's features came from the session's cache
