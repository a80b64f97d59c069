"""Headless Chromium (Debian's package) driven by Selenium, for the studio's browser tests and benchmark.

Nothing is downloaded: the browser and its driver are the system's (``apt-get install chromium chromium-driver``)
and Selenium Manager is kept offline.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("VOS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VOS_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,720"]


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return f"{path} is absent: apt-get install chromium chromium-driver (.ci/run installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the test extra)"
    return None


@contextmanager
def chromium(download_dir: Path | None = None) -> Iterator[Any]:
    """A fresh headless Chromium (own profile folder) at 1280x720; downloads go to ``download_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    profile = tempfile.mkdtemp(prefix="vos-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        # The page's viewport itself is 1280x720 (a window of that size has a smaller viewport).
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": 720, "deviceScaleFactor": 1, "mobile": False})
        if download_dir is not None:
            driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(condition: Callable[[], Any], timeout: float = 60.0, what: str = "the page",
               driver: Any = None) -> Any:
    """``condition()`` once it is true; on a timeout the error names what was awaited and the page's errors."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    errors = driver.execute_script("return window.studio.state.errors;") if driver is not None else []
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; errors shown on the page: {errors}")


def click_video(driver: Any, x: float, y: float, right: bool = False) -> None:
    """A real mouse click (through the browser's input pipeline) at video pixel (x, y) of the stage."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    offset = _stage_offset(driver, x, y)
    actions = ActionChains(driver).move_to_element_with_offset(driver.find_element(By.ID, "stage"), *offset)
    (actions.context_click() if right else actions.click()).perform()


def drag_video(driver: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A real mouse drag on the stage between two video pixels (the page makes a box of it)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    (x0, y0), (x1, y1) = _stage_offset(driver, *start), _stage_offset(driver, *end)
    stage = driver.find_element(By.ID, "stage")
    (ActionChains(driver).move_to_element_with_offset(stage, x0, y0).click_and_hold()
     .move_by_offset((x1 - x0) // 2, (y1 - y0) // 2).move_by_offset(x1 - x0 - (x1 - x0) // 2, y1 - y0 - (y1 - y0) // 2)
     .release().perform())


def _stage_offset(driver: Any, x: float, y: float) -> tuple[int, int]:
    """Video pixel (x, y) as an offset from the stage element's centre, in CSS pixels."""
    offset_x, offset_y = driver.execute_script(
        """const [x, y] = [arguments[0], arguments[1]];
        const video = window.studio.state.session.video;
        const frame = document.getElementById('overlay').getBoundingClientRect();
        const stage = document.getElementById('stage').getBoundingClientRect();
        return [frame.left + x * frame.width / video.width - (stage.left + stage.width / 2),
                frame.top + y * frame.height / video.height - (stage.top + stage.height / 2)];""", x, y)
    return round(offset_x), round(offset_y)
