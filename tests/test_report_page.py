"""report.html (``camrt evaluate``, ``explain-dataset --report``, ``camrt report``) opened in a real headless browser,
its self-containment and escaping, ``camrt report`` on an interrupted run, and where the map lands on the original
photo (``preprocess.crop_box``, ``overlay.overlay_on_original``)."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import open_browser
from PIL import Image

from camrt.cli import main
from camrt.runtime.bundle import Preprocessing
from camrt.runtime.overlay import overlay, overlay_on_original
from camrt.runtime.preprocess import crop_box, resize_and_crop
from examples.photos import photo_paths

HOSTILE = "<img src=x onerror=alert(1)>"  # a file name that would run script if it reached the page as markup
BROKEN = 'broken "&<b>.jpg'
METHODS = ["scorecam", "scorecam++"]


def _run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Real photos (scikit-image's chelsea, coffee, astronaut, rocket) in two class folders, one named to attack the
    page, and a corrupt file."""
    root = tmp_path_factory.mktemp("report_data")
    photos = photo_paths(root / "cache", ["chelsea", "coffee", "astronaut", "rocket"])
    (root / "data" / "cats").mkdir(parents=True)
    (root / "data" / "things").mkdir()
    shutil.copy(photos[0], root / "data" / "cats" / f"{HOSTILE}.jpg")
    for photo in photos[1:]:
        shutil.copy(photo, root / "data" / "things" / photo.name)
    (root / "data" / "things" / BROKEN).write_bytes(b"not a jpeg")
    return root / "data"


@pytest.fixture(scope="module")
def evaluated(named_bundle, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report_eval") / "eval"
    code = main([str(a) for a in ["evaluate", named_bundle, data, "--out", out, "--methods", ",".join(METHODS),
                                  "--causal", "rise", "--threads", "1", "--overlays", "0", "-q"]])
    assert code == 2  # the corrupt file is skipped and listed
    return out


def _page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="camrt-data">(.*?)</script>', text, re.S)
    assert block is not None
    return json.loads(block.group(1))


def test_the_page_works_in_a_real_browser(evaluated):
    page = evaluated / "report.html"
    dialogs: list[str] = []
    with open_browser() as browser:
        browser.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        browser.page.goto(page.as_uri())
        browser.page.wait_for_load_state("load")
        images = browser.page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
                                       "i.naturalWidth])")
        assert len(images) == 1 + 4 * (1 + len(METHODS))  # the curves, then per good photo: the photo, each map
        assert all(complete and width > 0 for _, complete, width in images), images
        rows = browser.page.locator("#body tr")
        assert rows.count() == 5
        names = browser.page.locator("#body .name").all_text_contents()
        assert f"{HOSTILE}.jpg" in names and BROKEN in names  # shown as text
        assert browser.page.locator("img[onerror]").count() == 0

        def column(k: int) -> list[str]:
            return browser.page.eval_on_selector_all(
                f"#body tr td:nth-child({4 + k})", "cells => cells.map(c => c.dataset.value)")

        def order() -> list[str]:
            return browser.page.eval_on_selector_all("#body tr", "rows => rows.map(r => r.dataset.index)")

        for metric in ("deletion_auc_rise", "average_drop_logit-full"):
            browser.page.select_option("#metric", metric)
            browser.page.click("#head th[data-sort=m0]")
            ascending = [float(v) for v in column(0) if v]
            assert ascending == sorted(ascending) and len(ascending) == 4
            first = order()
            statuses = browser.page.eval_on_selector_all("#body tr", "rows => rows.map(r => r.dataset.status)")
            assert statuses[-1] == "error"  # the bad image (no value) comes last
            browser.page.click("#head th[data-sort=m0]")
            descending = [float(v) for v in column(0) if v]
            assert descending == sorted(ascending, reverse=True)
            if len(set(ascending)) > 1:
                assert order() != first
            browser.page.click("#head th[data-sort=index]")
        assert len(set(ascending)) > 1  # the photos' values differ: the order above was a real sort

        browser.page.select_option("#status", "error")
        assert browser.page.eval_on_selector_all("#body tr", "r => r.map(x => x.dataset.status)") == ["error"]
        browser.page.select_option("#status", "")
        classes = browser.page.eval_on_selector_all("#body tr", "r => r.map(x => x.dataset.class)")
        chosen = next(c for c in classes if c)
        browser.page.select_option("#class", chosen)
        shown = browser.page.eval_on_selector_all("#body tr", "r => r.map(x => x.dataset.class)")
        assert shown == [c for c in classes if c == chosen]
        browser.page.select_option("#class", "")
        browser.page.fill("#search", "coffee")
        assert browser.page.locator("#body tr").count() == 1
        browser.page.fill("#search", "")

        browser.page.click("#body tr:first-child img >> nth=1")  # open one: every map larger
        assert browser.page.locator("#detail").is_visible()
        browser.page.wait_for_function("Array.from(document.querySelectorAll('#detail img')).every("
                                       "i => i.complete && i.naturalWidth > 0)")
        assert browser.page.locator("#detail img").count() == 1 + len(METHODS)
        browser.page.keyboard.press("Escape")
        assert not browser.page.locator("#detail").is_visible()
        assert browser.errors == [] and dialogs == []


def test_the_page_is_self_contained_and_escapes_names(evaluated):
    text = (evaluated / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "<link" not in text and not re.search(r"<script[^>]*\ssrc=", text)
    assert HOSTILE not in text and "<b>" not in text  # never as markup, anywhere
    assert html.escape(BROKEN) in text  # the skipped list names it, escaped
    data = _page_data(evaluated / "report.html")
    assert {r["name"] for r in data["rows"]} >= {f"{HOSTILE}.jpg", BROKEN}  # the names come back intact as data
    for row in data["rows"]:
        for files in [row["photo"], *row["methods"]]:
            for name in (files or {}).values():
                assert re.fullmatch(r"report/\d{6}-(photo|m\d+)-(thumb|view)\.jpg", name)
                assert (evaluated / name).is_file()
    bad = next(r for r in data["rows"] if r["status"] == "error")
    assert bad["name"] == BROKEN and "not an image" in bad["error"] and bad["methods"] == [None, None]


def test_report_rebuilds_an_interrupted_evaluate_run(evaluated, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    lines = (run / "records.jsonl").read_bytes().splitlines(keepends=True)
    (run / "records.jsonl").write_bytes(b"".join(lines[:2]) + lines[2][:30])  # killed while writing image 3
    for name in ("summary.json", "summary.md", "report.html", "curves-rise.png"):
        (run / name).unlink()
    next((run / "report").glob("000001-m1-thumb.jpg")).unlink()  # an overlay lost: evaluate keeps no maps
    code, stdout, err = _run(["report", run], capsys)
    assert code == 0, err
    assert stdout.strip() == f"report: {run / 'report.html'}"
    data = _page_data(run / "report.html")
    assert [r["index"] for r in data["rows"]] == [0, 1]
    assert data["rows"][1]["methods"][1] is None and data["rows"][1]["methods"][0] is not None  # shown as missing
    text = (run / "report.html").read_text(encoding="utf-8")
    assert "Over the 2 images done" in text and "Deletion AUC" in text  # the table, recomputed from the records
    assert (run / "curves-rise.png").is_file() and 'src="curves-rise.png"' in text
    with open_browser() as browser:
        browser.page.goto((run / "report.html").as_uri())
        assert browser.page.locator("#body .missing").count() == 1
        widths = browser.page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        assert len(widths) == 1 + 2 * 3 - 1 and min(widths) > 0  # the curves (plotted again), the photos, the maps
        assert browser.errors == []


def test_report_refuses_other_folders(tmp_path, capsys):
    code, _, err = _run(["report", tmp_path], capsys)
    assert code == 2 and err.count("\n") == 1 and "not a camrt evaluate or explain-dataset run folder" in err
    code, _, err = _run(["report", tmp_path / "gone"], capsys)
    assert code == 2 and "gone" in err


def test_explain_dataset_report_and_redrawn_overlays(named_bundle, data, tmp_path, capsys):
    out = tmp_path / "maps"
    code, stdout, err = _run(["explain-dataset", named_bundle, data, "--out", out, "--metrics", "--causal", "rise",
                              "--threads", "1", "-q", "--report"], capsys)
    assert code == 2 and f"report: {out / 'report.html'}" in stdout
    first = _page_data(out / "report.html")
    assert first["methods"] == ["scorecam"] and len(first["rows"]) == 5
    assert all(r["photo"] and r["methods"][0] for r in first["rows"] if r["status"] == "ok")
    assert "Deletion AUC" in (out / "report.html").read_text(encoding="utf-8")
    good = next(r["index"] for r in first["rows"] if r["status"] == "ok")
    before = (out / "report" / f"{good:06d}-m0-view.jpg").read_bytes()
    shutil.rmtree(out / "report")
    (out / "index.csv").unlink()  # as after a crash: the committed shards are what counts
    code, _, err = _run(["report", out], capsys)
    assert code == 0, err
    assert (out / "report" / f"{good:06d}-m0-view.jpg").read_bytes() == before  # drawn again from the shard's map
    assert _page_data(out / "report.html")["rows"] == first["rows"]


# ------------------------------------------------------------------------------------------ geometry
def _gradient(width: int, height: int) -> Image.Image:
    """A smooth photo whose pixels say where they are (x in red, y in green)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 128)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("size, resize, crop", [((400, 300), 32, (32, 32)), ((300, 451), 256, (224, 224)),
                                                ((90, 60), 60, (40, 80)), ((60, 90), 64, (64, 64))])
def test_crop_box_is_the_region_the_model_sees(size, resize, crop):
    pre = Preprocessing(resize=resize, crop=crop, mean=(0, 0, 0), std=(1, 1, 1))
    photo = _gradient(*size)
    box = crop_box(size, pre)
    model_input = np.asarray(resize_and_crop(photo, pre), dtype=np.float64)
    from_box = np.asarray(photo.resize((crop[1], crop[0]), Image.Resampling.BILINEAR, box=box), dtype=np.float64)
    assert np.abs(model_input - from_box).max() <= 2  # the same pixels, up to resampling (a level or two)


def test_crop_box_by_hand():
    pre = Preprocessing(resize=32, crop=(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    # 400 x 300 resizes to 42 x 32; the crop starts at x = round(10 / 2) = 5 of 42: 5 * 400 / 42 in the photo
    assert crop_box((400, 300), pre) == pytest.approx((5 * 400 / 42, 0, 37 * 400 / 42, 300))
    padded = Preprocessing(resize=20, crop=(40, 40), mean=(0, 0, 0), std=(1, 1, 1))
    # 100 x 50 resizes to 40 x 20; the 40 x 40 crop pads 10 rows above and below: beyond the photo's edges
    assert crop_box((100, 50), padded) == pytest.approx((0, -25, 100, 75))


def test_overlay_on_original_puts_the_map_in_the_box():
    photo = np.full((300, 400, 3), 200, dtype=np.uint8)
    box = (100.0, 50.0, 300.0, 250.0)  # a 200 x 200 square
    saliency = np.zeros((8, 8), dtype=np.float32)
    saliency[:4, :4] = 1.0  # hot in the top-left quarter of the crop
    out = overlay_on_original(photo, saliency, box, alpha=0.5, dim=0.5, line=0)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert (out[10, 10] == 100).all() and (out[290, 390] == 100).all()  # outside: the photo dimmed by half
    hot, cold = out[100, 150], out[200, 250]  # the middle of the top-left and bottom-right quarters of the box
    assert hot[0] > hot[2] and cold[2] > cold[0]  # red where the map is high, blue where it is low
    region = overlay(photo[50:250, 100:300], saliency, 0.5)  # the box on whole pixels: the crop's own overlay
    assert np.abs(out[50:250, 100:300].astype(int) - region.astype(int)).max() <= 1
    outlined = overlay_on_original(photo, saliency, box, line=2)
    assert (outlined[50, 150] == 255).all() and (outlined[150, 100] == 255).all()  # the box's edges, in white
    beyond = overlay_on_original(photo, saliency, (-100.0, -100.0, 500.0, 400.0))  # a crop that pads: clipped
    assert beyond.shape == photo.shape


def test_explain_draws_on_the_original_photo_or_the_input(named_bundle, data, tmp_path, capsys):
    photo = next((data / "things").glob("coffee*"))
    for mode, expected in (("original", Image.open(photo).size), ("input", (32, 32))):
        out = tmp_path / mode
        code, _, err = _run(["explain", named_bundle, photo, "--out", out, "--overlay", mode, "-q"], capsys)
        assert code == 0, err
        with Image.open(out / f"{photo.stem}.png") as image:
            assert image.size == expected
    code, _, err = _run(["explain", named_bundle, photo, "--out", tmp_path / "x", "--overlay", "crop"], capsys)
    assert code == 2 and "--overlay" in err


def test_the_gallery_pages(evaluated, tmp_path, monkeypatch):
    from camrt.runtime.report_page import builder

    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    monkeypatch.setattr(builder, "PAGE_SIZE", 2)
    builder.build_report(run)
    with open_browser() as browser:
        browser.page.goto((run / "report.html").as_uri())
        seen = []
        for page in range(3):
            assert browser.page.locator("#page").text_content() == f"page {page + 1} of 3"
            seen += browser.page.eval_on_selector_all("#body tr", "rows => rows.map(r => r.dataset.index)")
            assert browser.page.locator("#prev").is_disabled() == (page == 0)
            assert browser.page.locator("#next").is_disabled() == (page == 2)
            if page < 2:
                browser.page.click("#next")
        assert seen == ["0", "1", "2", "3", "4"]  # every image once, in order
        browser.page.select_option("#status", "error")  # a filter starts again at the first page
        assert browser.page.locator("#page").text_content() == "page 1 of 1"
        assert browser.errors == []
