"""``camrt serve``'s page in a real headless browser (Debian's chromium through Playwright, tests/browser.py):
pick a real photo, see the overlay, the top classes and the time, with no console error.

``CAMRT_SERVE_SCREENSHOT=docs/serve.png`` also saves the screenshot the README shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from browser import open_browser  # noqa: E402

from camrt.runtime.serve.local import serving  # noqa: E402


def real_photo(folder: Path) -> Path:
    """scikit-image's chelsea (a real photo) as a JPEG, else a smooth synthetic picture."""
    try:
        from skimage import data

        pixels = data.chelsea()
    except ImportError:  # scikit-image is a dev extra; any picture shows the page working
        pixels = np.linspace(0, 255, 300 * 451 * 3).reshape(300, 451, 3).astype(np.uint8)
    path = folder / "chelsea.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    return path


def test_page_explains_a_dropped_photo(named_bundle, tmp_path) -> None:
    photo = real_photo(tmp_path)
    with serving(named_bundle, ["--threads", 1, "-q"]) as server, open_browser(1100, 760) as browser:
        page = browser.page
        page.goto(server.url + "/")
        page.wait_for_function("document.querySelectorAll('#method option').length > 0")
        assert page.locator("#model").inner_text().startswith("tiny-cli")
        page.select_option("#method", "scorecam++")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
        classes = page.locator("#classes li").all_inner_texts()
        assert len(classes) == 5 and all(text.startswith("class") for text in classes)
        size = page.evaluate("[document.getElementById('overlay').naturalWidth, "
                             "document.getElementById('overlay').naturalHeight]")
        assert size == [451, 300]  # drawn on the photo as sent
        timing = page.locator("#timing").inner_text()
        assert "queued" in timing and "computing" in timing and "round trip" in timing
        assert "scorecam++" in page.locator("#caption").inner_text()
        assert browser.errors == []
        page.fill("#target", "class9")  # a bad target: the page shows the server's one-line error
        page.click("#run")
        page.wait_for_function("document.getElementById('status').className === 'error'")
        assert "no class named 'class9'" in page.locator("#status").inner_text()
        page.fill("#target", "predicted")
        page.click("#run")
        page.wait_for_function("document.getElementById('status').className !== 'error' && "
                               "document.getElementById('status').textContent.startsWith('explained')")
        shot = Path(os.environ.get("CAMRT_SERVE_SCREENSHOT") or tmp_path / "serve.png")
        browser.screenshot(str(shot), full_page=False)
        assert shot.stat().st_size > 10_000
        assert len(browser.errors) == 1 and "status of 400" in browser.errors[0]  # chromium logs the bad target's 400
