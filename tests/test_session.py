"""Session contract on small synthetic clips made here (no shared data needed), with the weight-free engine.

The clip: a red disc moving right and a blue square moving left over a smooth random texture, so the classical
engine's flow and colour models have something real to work with, and every expected mask is known exactly.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vos.engine import create_engine
from vos.errors import PromptError
from vos.prompts import ObjectPrompt, Point
from vos.session import DiskResultStore, MemoryResultStore, Session
from vos.video import ArrayVideo

H, W, N = 96, 128, 10


def _disc(t: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, (24 + 4 * t, 40), 14, 1, -1)
    return mask.astype(bool)


def _square(t: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[55:80, 100 - 3 * t:125 - 3 * t] = True
    return mask


def _clip(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.uniform(60, 200, (H, W, 3)).astype(np.float32), (0, 0), 3)
    frames = []
    for t in range(N):
        frame = np.roll(texture, t, axis=1).astype(np.uint8)  # the camera pans slowly
        frame[_disc(t)] = (220, 30, 30)
        frame[_square(t)] = (30, 40, 210)
        frames.append(frame)
    return frames


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def engine():
    return create_engine("classical")


@pytest.fixture
def session(engine):
    with Session(engine, ArrayVideo(_clip())) as session:
        yield session


def _masks(session: Session) -> list[dict[int, np.ndarray]]:
    return [{i: r.mask for i, r in result.objects.items()} for result in session.results(with_images=False)]


def test_prompt_on_a_middle_frame_propagates_both_ways(session) -> None:
    first = session.add_prompt(ObjectPrompt(object_id=1, frame_index=5, mask=_disc(5)))
    assert first.index == 5 and first.revision == 1 and np.array_equal(first.objects[1].mask, _disc(5))
    yielded = [r.index for r in session.propagate(5, "both")]
    assert yielded == [6, 7, 8, 9, 4, 3, 2, 1, 0]  # the prompted frame did not change, so it is not repeated
    assert all(_iou(masks[1], _disc(t)) > 0.85 for t, masks in enumerate(_masks(session)))


def test_backward_propagation_equals_forward_on_the_reversed_video(engine) -> None:
    frames = _clip()
    with Session(engine, ArrayVideo(frames)) as backward, Session(engine, ArrayVideo(frames[::-1])) as forward:
        backward.add_prompt(ObjectPrompt(object_id=1, frame_index=N - 1, mask=_disc(N - 1)))
        forward.add_prompt(ObjectPrompt(object_id=1, frame_index=0, mask=_disc(N - 1)))
        back = list(backward.propagate(N - 1, "backward"))
        ahead = list(forward.propagate(0, "forward"))
    assert [r.index for r in back] == [N - 1 - r.index for r in ahead]
    for b, f in zip(back, ahead):
        assert np.array_equal(b.objects[1].mask, f.objects[1].mask)


def test_propagation_stops_at_the_next_prompted_frame(session) -> None:
    session.add_prompt(ObjectPrompt(object_id=1, frame_index=0, mask=_disc(0)))
    session.add_prompt(ObjectPrompt(object_id=1, frame_index=6, mask=_disc(6)))
    assert [r.index for r in session.propagate(0, "forward")] == [1, 2, 3, 4, 5]
    assert [r.index for r in session.propagate(6, "forward")] == [7, 8, 9]
    assert session.result(6, with_image=False).revision == 1  # the anchor itself was never overwritten


def test_midway_propagation_leaves_each_frame_to_its_nearest_prompt(session) -> None:
    session.add_prompt(ObjectPrompt(object_id=1, frame_index=0, mask=_disc(0)))
    session.add_prompt(ObjectPrompt(object_id=1, frame_index=8, mask=_square(8)))  # the user changed their mind
    assert [r.index for r in session.propagate(0, "forward", midway=True)] == [1, 2, 3, 4]
    assert [r.index for r in session.propagate(8, "both", midway=True)] == [9, 7, 6, 5, 4]  # 4 is as near 8 as 0
    masks = _masks(session)
    assert all(_iou(masks[t][1], _disc(t)) > 0.8 for t in range(4))
    assert all(_iou(masks[t][1], _square(t)) > 0.8 for t in range(4, N))


def test_repropagation_yields_each_changed_frame_once_per_revision(session) -> None:
    session.add_prompt(ObjectPrompt(object_id=1, mask=_disc(0)))
    first = list(session.propagate(0, "forward"))
    assert [(r.index, r.revision) for r in first] == [(t, 1) for t in range(1, N)]
    assert list(session.propagate(0, "forward")) == []  # nothing changed: nothing is yielded again
    session.add_prompt(ObjectPrompt(object_id=2, frame_index=3, mask=_square(3)))
    again = list(session.propagate(3, "both"))
    indices = [r.index for r in again]
    assert len(indices) == len(set(indices)) and set(indices) == set(range(N)) - {3}
    assert all(r.revision == 2 for r in again)
    assert session.result(3, with_image=False).revision == 2  # object 1 from propagation, then object 2's prompt


def test_a_correction_raises_the_corrected_frames_iou(session) -> None:
    half = _disc(6) & (np.arange(W)[None, :] < 48)  # a mask that misses the disc's right half
    before = _iou(session.add_prompt(ObjectPrompt(object_id=1, frame_index=6, mask=half)).objects[1].mask, _disc(6))
    corrected = session.add_prompt(ObjectPrompt(object_id=1, frame_index=6, points=[Point(x=56, y=40)]))
    after = _iou(corrected.objects[1].mask, _disc(6))
    assert before < 0.6 and after > 0.85, (before, after)
    assert len(session.objects[1].anchors[6].prompts) == 2
    too_much = session.add_prompt(ObjectPrompt(object_id=1, frame_index=6, mask=_disc(6) | _square(6)))
    assert _iou(too_much.objects[1].mask, _disc(6)) < 0.6  # a mask replaces the object's mask
    negative = session.add_prompt(ObjectPrompt(object_id=1, frame_index=6, points=[Point(x=94, y=67,
                                                                                        positive=False)]))
    assert _iou(negative.objects[1].mask, _disc(6)) > 0.85  # a negative click amid the square removes it


def test_removing_an_object_leaves_the_others_exactly_as_they_were(session) -> None:
    session.add_prompt(ObjectPrompt(object_id=1, mask=_disc(0)))
    session.add_prompt(ObjectPrompt(object_id=2, frame_index=4, mask=_square(4)))
    list(session.propagate(0, "forward", [1]))
    before = _masks(session)
    list(session.propagate(4, "both", [2]))
    with_two = _masks(session)
    for t in range(N):  # adding object 2 only took pixels object 2 now owns
        lost = before[t][1] & ~with_two[t][1]
        assert not (with_two[t][1] & ~before[t][1]).any() and (lost <= with_two[t][2]).all()
    changed = session.remove_object(2)
    assert changed == list(range(N))
    after = _masks(session)
    for t in range(N):
        assert set(after[t]) == {1} and np.array_equal(after[t][1], with_two[t][1])
    with pytest.raises(PromptError, match="object 2 is not in this session"):
        session.remove_object(2)


def test_clearing_a_frames_prompts_drops_that_anchor(session) -> None:
    session.add_prompt(ObjectPrompt(object_id=1, mask=_disc(0)))
    session.add_prompt(ObjectPrompt(object_id=1, frame_index=5, mask=_disc(5)))
    cleared = session.clear_prompts(1, 5)
    assert 1 not in cleared.objects and sorted(session.objects[1].anchors) == [0]
    assert [r.index for r in session.propagate(0, "forward")] == list(range(1, N))  # no longer stops at 5
    with pytest.raises(PromptError, match="no prompt on frame 5"):
        session.clear_prompts(1, 5)
    session.clear_prompts(1, 0)  # its last prompt: the object goes
    assert not session.objects and not session.result(3, with_image=False).objects


def test_two_sessions_on_one_engine_do_not_interfere(engine) -> None:
    def solo(frames: list[np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
        with Session(engine, ArrayVideo(frames)) as session:
            session.add_prompt(ObjectPrompt(object_id=1, mask=mask))
            return [r.objects[1].mask for r in session.propagate(0, "forward")]

    a_frames, b_frames = _clip(1), _clip(2)[::-1]
    expected_a, expected_b = solo(a_frames, _disc(0)), solo(b_frames, _square(N - 1))
    with Session(engine, ArrayVideo(a_frames)) as a, Session(engine, ArrayVideo(b_frames)) as b:
        a.add_prompt(ObjectPrompt(object_id=1, mask=_disc(0)))
        b.add_prompt(ObjectPrompt(object_id=1, mask=_square(N - 1)))
        interleaved = zip(a.propagate(0, "forward"), b.propagate(0, "forward"))
        got_a, got_b = zip(*[(ra.objects[1].mask, rb.objects[1].mask) for ra, rb in interleaved])
    assert all(np.array_equal(x, y) for x, y in zip(got_a, expected_a))
    assert all(np.array_equal(x, y) for x, y in zip(got_b, expected_b))


@pytest.mark.parametrize("store", [MemoryResultStore, DiskResultStore])
def test_result_stores_keep_the_latest_revision(engine, store, tmp_path) -> None:
    with Session(engine, ArrayVideo(_clip()), store()) as session:
        session.add_prompt(ObjectPrompt(object_id=1, mask=_disc(0)))
        session.add_prompt(ObjectPrompt(object_id=2, mask=_square(0)))
        list(session.propagate(0, "forward"))
        session.write(tmp_path, overlay=False)
        results = list(session.results(with_images=False))
    assert [r.revision for r in results] == [2] + [1] * (N - 1)
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"{t:05d}.png" for t in range(N)]
    lines = (tmp_path / "masks.jsonl").read_text().splitlines()
    assert len(lines) == N and '"frame": 9' in lines[-1]


def test_disk_store_removes_its_temporary_folder(engine) -> None:
    session = Session(engine, ArrayVideo(_clip()))
    session.add_prompt(ObjectPrompt(object_id=1, mask=_disc(0)))
    folder = session.store.folder
    assert any(folder.iterdir())
    session.close()
    assert not folder.exists()


def test_bad_session_calls_are_clear_errors(session) -> None:
    with pytest.raises(PromptError, match="frame 12.*10 frames"):
        session.add_prompt(ObjectPrompt(object_id=1, frame_index=12, mask=_disc(0)))
    with pytest.raises(PromptError, match="cannot propagate from frame 10"):
        list(session.propagate(10))
    with pytest.raises(PromptError, match="not in this session"):
        list(session.propagate(0, objects=[4]))
    with pytest.raises(PromptError, match="cannot prepare frame -1"):
        session.prepare(-1)


def test_a_prepared_frame_gives_the_same_mask_from_its_cached_motion_cue(engine) -> None:
    """Preparing a frame caches the engine's per-frame data (the motion cue the click needs), and the prompt that
    follows uses it: the same mask as without preparing, and the cue is not measured again."""
    click = ObjectPrompt(object_id=1, frame_index=2, points=[Point(x=24 + 4 * 2, y=40)])
    with Session(engine, ArrayVideo(_clip())) as cold:
        expected = cold.add_prompt(click).objects[1].mask
    with Session(engine, ArrayVideo(_clip())) as prepared:
        prepared.prepare(2)
        cached = len(prepared._features)
        assert cached > 0
        mask = prepared.add_prompt(click).objects[1].mask
        assert len(prepared._features) == cached  # nothing new was computed for the frame
    assert np.array_equal(mask, expected)
    assert _iou(mask, _disc(2)) > 0.8


def test_a_propagation_leaves_the_session_cache_to_the_frames_the_user_prepared(engine) -> None:
    """A sweep keeps the per-frame data it computes in a window of its own: the session's cache (bounded, but
    otherwise filled by every frame of a long video) keeps only the prepared and prompted frames, and a frame
    prepared before the propagation is still prepared after it."""
    click = ObjectPrompt(object_id=2, frame_index=7, points=[Point(x=24 + 4 * 7, y=40)])
    with Session(engine, ArrayVideo(_clip())) as session:
        session.add_prompt(ObjectPrompt(object_id=1, frame_index=0, mask=_square(0)))
        session.prepare(7)
        cached = len(session._features)
        assert len(list(session.propagate(0, "forward"))) == N - 1
        assert len(session._features) == cached
        session.add_prompt(click)
        assert len(session._features) == cached  # frame 7's data was still there


def test_a_correction_that_empties_a_frame_leaves_the_frames_around_it(session) -> None:
    """A negative click that removes all of an object's mask on a frame says the object is not there; it says nothing
    about the frames around it, so propagating from that frame changes none of them. Propagated, the emptiness wiped
    the object off the rest of the sweep (vos eval interactive, DAVIS 2016 val bmx-trees round 5: a click on a frame
    whose mask held 0.6% of the rider took 33 frames from J 0.36 to 0)."""
    session.add_prompt(ObjectPrompt(object_id=1, mask=_disc(0)))
    list(session.propagate(0, "forward"))
    before = _masks(session)
    emptied = session.add_prompt(ObjectPrompt(object_id=1, frame_index=5, points=[Point(x=44, y=40, positive=False)]))
    assert 1 not in emptied.objects or not emptied.objects[1].mask.any()
    assert list(session.propagate(5, "both")) == []
    after = _masks(session)
    assert all(np.array_equal(after[t][1], before[t][1]) for t in range(N) if t != 5)
