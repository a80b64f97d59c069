"""SEEM through the sessions API and the studio page, on a tiny SEEM model with random weights (``seem-tiny``,
see ``tests/service/tiny_seem.py``): text and reference prompts go through and return masks, and the page offers
its text box and reference picker for that engine (and not for the weight-free one, see test_studio_page)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from browser import chromium, missing_browser, wait_until
from studio_helpers import SAMPLE, open_session

from vos.masks import decode_rle

ENGINE = "seem-tiny"


def png_base64(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return base64.b64encode(data.tobytes()).decode()


def swan_crop() -> np.ndarray:
    """A picture of the swan alone (BGR): the reference of "things like this"."""
    capture = cv2.VideoCapture(str(SAMPLE))
    ok, frame = capture.read()
    capture.release()
    assert ok
    return frame[200:420, 150:450]


@pytest.fixture
def seem_session(client: httpx.Client) -> Any:
    created = open_session(client, engine=ENGINE)
    yield created
    client.delete(f"/v1/sessions/{created['id']}")


def test_text_and_reference_prompts_return_masks(client: httpx.Client, seem_session: dict[str, Any]) -> None:
    sid = seem_session["id"]
    assert {"text", "reference"} <= set(seem_session["supported_prompts"])
    response = client.post(f"/v1/sessions/{sid}/prompts", json={"object_id": 1, "frame_index": 3, "text": "a swan"})
    assert response.status_code == 200, response.text
    text = response.json()
    assert text["frame"] == 3 and [o["object_id"] for o in text["objects"]] == [1]
    assert decode_rle(text["objects"][0]["rle"]).shape == (480, 854) and text["objects"][0]["area"] > 0

    crop = swan_crop()
    reference = {"image": {"png_base64": png_base64(crop)},
                 "mask": {"png_base64": png_base64(np.full(crop.shape[:2], 255, np.uint8))}}
    response = client.post(f"/v1/sessions/{sid}/prompts",
                           json={"object_id": 2, "frame_index": 3, "reference": reference})
    assert response.status_code == 200, response.text
    both = response.json()
    assert both["revision"] == 2 and sorted(o["object_id"] for o in both["objects"]) == [1, 2]
    masks = {o["object_id"]: decode_rle(o["rle"]) for o in both["objects"]}
    assert masks[2].any() and not (masks[1] & masks[2]).any()

    prepared = client.post(f"/v1/sessions/{sid}/frames/10/prepare")  # SEEM's image features, before any prompt
    assert prepared.status_code == 200 and prepared.json()["prepared"], prepared.text
    bad = client.post(f"/v1/sessions/{sid}/prompts", json={"object_id": 1, "frame_index": 3, "text": ""})
    assert bad.status_code == 422, bad.text


@pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))
def test_the_page_offers_text_and_reference_for_seem(server: Any, tmp_path: Path, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    reference = tmp_path / "swan.png"
    cv2.imwrite(str(reference), swan_crop())
    with chromium() as driver:
        driver.get(server.url + "/")
        # The page offers the engines of a production service; the test service adds its tiny SEEM.
        driver.execute_script("""const option = document.createElement('option');
                                 option.value = option.textContent = arguments[0];
                                 document.getElementById('engine').append(option);
                                 document.getElementById('engine').value = arguments[0];""", ENGINE)
        driver.find_element(By.ID, "video-file").send_keys(str(SAMPLE))
        wait_until(lambda: driver.execute_script("return window.studio.state.session?.id"), 60, "the upload", driver)
        assert driver.execute_script("return window.studio.state.session.engine;") == ENGINE
        for control in ("text-prompt", "text-send", "reference"):
            assert driver.find_element(By.ID, control).is_enabled(), control
        assert driver.find_element(By.ID, "text-reason").text == ""

        driver.find_element(By.ID, "text-prompt").send_keys("a swan")
        driver.find_element(By.ID, "text-send").click()
        wait_until(lambda: driver.execute_script("return window.studio.maskOf(0, 1);"), 120, "the text's mask", driver)

        driver.find_element(By.ID, "add-object").click()
        driver.find_element(By.ID, "reference").send_keys(str(reference))
        wait_until(lambda: driver.execute_script("return window.studio.maskOf(0, 2);"), 120, "the reference's mask",
                   driver)
        driver.save_screenshot(str(artifacts / "10-seem-text-and-reference.png"))
        assert not driver.execute_script("return window.studio.state.errors;")
        for object_id in (1, 2):
            rle = driver.execute_script("return window.studio.maskOf(0, arguments[0]);", object_id)
            assert decode_rle(rle).any(), object_id
