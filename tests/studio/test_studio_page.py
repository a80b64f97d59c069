"""The studio page end to end in headless Chromium: upload, click, track, correct, re-track, export.

Screenshots of each state go to ``$ARTIFACTS/studio`` (or the test's temporary folder): look at them.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import chromium, click_video, drag_video, missing_browser, wait_until
from PIL import Image
from studio_helpers import SAMPLE, SAMPLE_MASK, SWAN_POINT

from eval.runner import interior_point
from vos.masks import decode_rle

pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))

DAVIS_BLACKSWAN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "davis16" / "Annotations" / "480p" \
    / "blackswan"


def truth(frame: int) -> np.ndarray:
    """The DAVIS ground truth of the sample (the shipped copy of frame 0 when ../shared is absent)."""
    path = DAVIS_BLACKSWAN / f"{frame:05d}.png"
    if not path.is_file():
        assert frame == 0, "only frame 0's annotation ships with the sample"
        path = SAMPLE_MASK
    return np.array(Image.open(path)) > 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def mask(driver: Any, frame: int, object_id: int = 1) -> np.ndarray | None:
    rle = driver.execute_script("return window.studio.maskOf(arguments[0], arguments[1]);", frame, object_id)
    return decode_rle(rle) if rle else None


def revision(driver: Any, frame: int) -> int:
    return driver.execute_script("return window.studio.state.masks.get(arguments[0])?.revision ?? 0;", frame)


def finished_runs(driver: Any) -> int:
    return driver.execute_script("return window.studio.state.finishedRuns;")


def wait_tracked(driver: Any, before: int, timeout: float = 240.0) -> str:
    """The tracking text once a run started after ``before`` runs had finished is over."""
    from selenium.webdriver.common.by import By

    wait_until(lambda: finished_runs(driver) > before, timeout, "the tracking to end", driver)
    return driver.find_element(By.ID, "track-text").text


def go_to_frame(driver: Any, frame: int) -> None:
    driver.execute_script("""const s = document.getElementById('scrubber'); s.value = arguments[0];
                             s.dispatchEvent(new Event('input'));""", frame)
    wait_until(lambda: driver.execute_script("return window.studio.state.frame;") == frame, 10, f"frame {frame}")


def false_positive_point(predicted: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """The interior point of the largest region taken as the object wrongly (a background point if none)."""
    wrong = (predicted & ~expected).astype(np.uint8)
    if wrong.sum() < 50:
        ys, xs = np.nonzero(~predicted & ~expected)
        return float(xs[len(xs) // 2]), float(ys[len(ys) // 2])
    point = interior_point(wrong.astype(bool))
    return point.x, point.y


def test_upload_click_track_correct_retrack_export(server: Any, tmp_path: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with chromium(downloads) as driver:
        driver.get(server.url + "/")
        assert "seem-vos studio" in driver.title
        driver.save_screenshot(str(artifacts / "0-empty.png"))

        driver.find_element(By.ID, "video-file").send_keys(str(SAMPLE))
        wait_until(lambda: driver.execute_script("return window.studio.state.session?.id"), 60, "the upload", driver)
        wait_until(lambda: driver.execute_script("return document.getElementById('frame').naturalWidth > 0;"),
                   30, "the first frame")
        # The page has the worker prepare the frame it shows, so the click finds the frame's data computed.
        wait_until(lambda: driver.execute_script("return window.studio.state.prepared.has(0);"), 60,
                   "frame 0 to be prepared", driver)
        reason = driver.find_element(By.ID, "text-reason").text
        assert "cannot use text or reference" in reason
        assert not driver.find_element(By.ID, "text-prompt").is_enabled()
        driver.save_screenshot(str(artifacts / "1-opened.png"))

        click_video(driver, *SWAN_POINT)  # one click on the swan
        wait_until(lambda: revision(driver, 0) >= 1, 30, "the mask of the click", driver)
        driver.save_screenshot(str(artifacts / "2-clicked.png"))
        first = mask(driver, 0)
        assert iou(first, truth(0)) > 0.6
        assert driver.execute_script("return window.studio.state.lastLatencyMs;") > 0
        server_timing = driver.execute_script("return window.studio.state.lastTimings.server;")
        assert set(server_timing) == {"check", "relay", "worker", "engine", "api"}  # the page reads Server-Timing

        runs = finished_runs(driver)
        driver.find_element(By.ID, "track").click()
        streaming = ("const s = window.studio.state;"
                     "return (s.run?.done ?? 0) >= 10 || s.finishedRuns > arguments[0];")
        wait_until(lambda: driver.execute_script(streaming, runs), 120, "frames to stream in", driver)
        driver.save_screenshot(str(artifacts / "3-tracking.png"))
        assert "done" in wait_tracked(driver, runs)
        assert all(revision(driver, i) >= 1 for i in range(50))

        go_to_frame(driver, 30)
        before = mask(driver, 30)
        old_revision = revision(driver, 30)
        x, y = false_positive_point(before, truth(30) if DAVIS_BLACKSWAN.is_dir() else before)
        click_video(driver, x, y, right=True)
        wait_until(lambda: revision(driver, 30) > old_revision, 30, "the corrected mask", driver)
        assert not mask(driver, 30)[int(y), int(x)]  # the negative click removed its pixel
        retrack = driver.find_element(By.ID, "retrack")
        assert retrack.is_displayed()
        driver.save_screenshot(str(artifacts / "4-corrected.png"))
        driver.execute_script("document.getElementById('direction').value = 'forward';")
        runs = finished_runs(driver)
        retrack.click()
        assert "done" in wait_tracked(driver, runs)
        assert all(revision(driver, i) >= 2 for i in range(31, 50))  # re-tracked after the correction
        driver.save_screenshot(str(artifacts / "5-retracked.png"))

        driver.find_element(By.CSS_SELECTOR, ".export[data-name='masks.zip']").click()
        archive_path = wait_until(lambda: next(iter(downloads.glob("*masks.zip")), None), 120, "the zip download",
                                  driver)
        wait_until(lambda: not list(downloads.glob("*.crdownload")), 30, "the download to finish")
        driver.save_screenshot(str(artifacts / "6-exported.png"))

        driver.find_element(By.ID, "job-id").send_keys("nosuchjob0000000")
        driver.find_element(By.CSS_SELECTOR, "#job-form button").click()
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#errors .error"), 10, "the error message")
        assert "404: no job" in driver.find_element(By.CSS_SELECTOR, "#errors .error").text
        driver.save_screenshot(str(artifacts / "7-error.png"))

    archive = zipfile.ZipFile(io.BytesIO(archive_path.read_bytes()))
    names = sorted(archive.namelist())
    assert len(names) == 50 and names[0].endswith(".png")
    labels = np.array(Image.open(archive.open(names[0])))
    assert iou(labels == 1, first) > 0.99 and iou(labels == 1, truth(0)) > 0.6


def test_keys_brush_objects_and_undo(server: Any, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with chromium() as driver:
        driver.get(server.url + "/")
        driver.find_element(By.ID, "video-file").send_keys(str(SAMPLE))
        wait_until(lambda: driver.execute_script("return window.studio.state.session?.id"), 60, "the upload", driver)
        stage = driver.find_element(By.ID, "stage")
        frame = lambda: driver.execute_script("return window.studio.state.frame;")  # noqa: E731
        stage.send_keys(Keys.ARROW_RIGHT)
        assert wait_until(lambda: frame() == 1, 5, "the arrow key")
        stage.send_keys(Keys.SHIFT, Keys.ARROW_RIGHT)
        assert wait_until(lambda: frame() == 11, 5, "Shift+arrow")
        stage.send_keys(Keys.ARROW_LEFT)
        assert wait_until(lambda: frame() == 10, 5, "the left arrow")

        driver.find_element(By.ID, "add-object").click()
        selected = lambda: driver.execute_script("return window.studio.state.selected;")  # noqa: E731
        assert selected() == 2
        stage.send_keys("1")
        assert selected() == 1
        stage.send_keys("2")
        assert selected() == 2

        stage.send_keys("b")
        assert driver.execute_script("return document.querySelector('input[name=tool]:checked').value;") == "brush"
        drag_video(driver, (230.0, 330.0), (330.0, 300.0))
        wait_until(lambda: revision(driver, 10) >= 1, 30, "the scribble's mask", driver)
        scribbled = mask(driver, 10, 2)
        assert scribbled is not None and scribbled[315, 280]  # the stroke's middle is in object 2's mask
        driver.save_screenshot(str(artifacts / "8-brush.png"))

        stage.send_keys("b")  # back to clicks: a negative click in the scribble's mask corrects it
        click_video(driver, 300.0, 310.0, right=True)
        wait_until(lambda: revision(driver, 10) >= 2, 30, "the correction", driver)
        stage.send_keys("z")  # undoes the correction: the scribble's mask again
        wait_until(lambda: revision(driver, 10) >= 3, 30, "the first undo", driver)
        assert np.array_equal(mask(driver, 10, 2), scribbled)
        stage.send_keys("z")  # undoes the scribble: nothing left
        wait_until(lambda: revision(driver, 10) >= 4, 30, "the second undo", driver)
        undone = mask(driver, 10, 2)
        assert undone is None or not undone.any()

        stage.send_keys(Keys.SPACE)
        assert wait_until(lambda: frame() >= 13, 10, "playing")
        stage.send_keys(Keys.SPACE)
        stopped_at = frame()
        time.sleep(0.5)
        assert frame() == stopped_at

        driver.find_element(By.CSS_SELECTOR, "#objects li[data-id='2'] button").click()
        wait_until(lambda: driver.execute_script("return window.studio.state.objects.length;") == 1, 10,
                   "the object's removal", driver)
        assert not driver.execute_script("return window.studio.state.errors;")


def test_open_a_finished_job_shows_its_masks(server: Any, artifacts: Path) -> None:
    from helpers import submit, wait_for
    from selenium.webdriver.common.by import By

    with server.client() as client:
        job = submit(client, SAMPLE, prompts=[{"object_id": 1, "box": {"x0": 120, "y0": 60, "x1": 520, "y1": 400}}])
        wait_for(client, job["id"], lambda s: s["state"] == "succeeded", timeout=180)
    with chromium() as driver:
        driver.get(server.url + "/")
        driver.find_element(By.ID, "video-file").send_keys(str(SAMPLE))  # a first session, left for the job's
        wait_until(lambda: driver.execute_script("return window.studio.state.session?.id"), 60, "the upload", driver)
        click_video(driver, *SWAN_POINT)
        wait_until(lambda: revision(driver, 0) >= 1, 30, "the click's mask", driver)
        driver.find_element(By.ID, "job-id").send_keys(job["id"])
        driver.find_element(By.CSS_SELECTOR, "#job-form button").click()
        wait_until(lambda: driver.execute_script("return window.studio.state.masks.size;") == 50, 60,
                   "the job's masks", driver)
        assert driver.execute_script("return window.studio.state.session.source_job;") == job["id"]
        runs = driver.execute_script("return [...window.studio.state.masks.values()].map((r) => r.run);")
        assert set(runs) == {"job"}  # nothing of the first session leaked into this one
        assert mask(driver, 0).sum() > 10_000
        driver.execute_script("""const s = document.getElementById('scrubber'); s.value = 40;
                                 s.dispatchEvent(new Event('input'));""")
        wait_until(lambda: driver.execute_script("return document.getElementById('strip').naturalWidth > 0;"), 30,
                   "the thumbnail strip", driver)
        driver.save_screenshot(str(artifacts / "9-opened-job.png"))
