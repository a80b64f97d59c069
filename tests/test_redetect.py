"""Re-detection of a lost object from its prompt-frame colours (vos.engines.redetect)."""

from __future__ import annotations

import cv2
import numpy as np

from vos.engines.redetect import AppearanceModel, Reacquirer


def _scene(centre: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A red disc (the object) on a textured green-and-grey background; BGR frame and the disc's mask."""
    rng = np.random.default_rng(0)
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, :80] = (40, 160, 40)
    frame[:, 80:] = (128, 128, 128)
    frame = np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    cv2.circle(mask, centre, 12, 1, -1)
    frame[mask > 0] = (30, 30, 200)
    return frame, mask.astype(bool)


def test_a_mask_on_the_background_is_lost_and_the_object_found_again() -> None:
    first, disc = _scene((40, 60))
    model = AppearanceModel.fit(first, disc)
    assert model.prompt_evidence > 0.9
    later, moved = _scene((120, 60))  # the object crossed to the grey half; the mask stayed behind
    assert model.is_lost(later, disc)
    assert not model.is_lost(later, moved)
    found = model.redetect(later, float(disc.sum()), (40.0, 60.0), avoid=disc)
    assert found is not None
    assert np.count_nonzero(found & moved) / np.count_nonzero(found | moved) > 0.9


def test_reacquirer_keeps_a_good_mask_and_replaces_a_lost_one() -> None:
    first, disc = _scene((40, 60))
    reacquirer = Reacquirer.start(first, disc)
    assert reacquirer is not None
    later, moved = _scene((120, 60))
    assert reacquirer.update(later, moved) is moved
    assert reacquirer.centre[0] > 100  # the good sighting moved with the object
    replaced = reacquirer.update(later, disc)
    assert np.count_nonzero(replaced & moved) / np.count_nonzero(replaced | moved) > 0.9


def test_nothing_like_the_object_is_not_a_detection() -> None:
    first, disc = _scene((40, 60))
    model = AppearanceModel.fit(first, disc)
    empty = first.copy()
    empty[disc] = (40, 160, 40)  # the object left the frame
    assert model.redetect(empty, float(disc.sum()), (40.0, 60.0), avoid=np.zeros_like(disc)) is None


def test_an_object_filling_the_frame_has_no_reacquirer() -> None:
    frame, _ = _scene((40, 60))
    assert Reacquirer.start(frame, np.ones(frame.shape[:2], bool)) is None
    assert Reacquirer.start(frame, np.zeros(frame.shape[:2], bool)) is None


def test_a_lost_object_is_looked_for_first_among_what_moves() -> None:
    """Two look-alike discs: the nearer one is parked, the farther one moves. Told what moves, the reacquirer takes
    the moving one; told nothing (a still or unknown camera), the nearer one."""
    first, disc = _scene((40, 60))
    reacquirer = Reacquirer.start(first, disc)
    assert reacquirer is not None
    later, parked = _scene((100, 30))
    _, ridden = _scene((130, 95))
    later[ridden] = later[parked][0]
    stuck = disc  # the mask stayed on the green background
    found_by_colour = reacquirer.update(later, stuck)
    assert np.count_nonzero(found_by_colour & parked) > 0.9 * np.count_nonzero(parked)
    reacquirer = Reacquirer.start(first, disc)
    assert reacquirer is not None
    moving = cv2.dilate(ridden.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    found_by_motion = reacquirer.update(later, stuck, moving=lambda: moving)
    assert np.count_nonzero(found_by_motion & ridden) > 0.9 * np.count_nonzero(ridden)
    assert not (found_by_motion & parked).any()
