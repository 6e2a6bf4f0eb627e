"""Decoding: photos read as a person sees them (EXIF orientation, 16-bit, alpha) and within bounds (regular files,
a pixel limit, only the crop resized), with what was done in every command's per-image records."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camrt
from camrt.cli import main
from camrt.errors import InputError
from camrt.runtime.bundle import Preprocessing
from camrt.runtime.prefetch import decode
from camrt.runtime.preprocess import MAX_ASPECT, MAX_PIXELS, decode_photo, load_image, regular_file, resize_and_crop

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
PRE = Preprocessing(resize=37, crop=(32, 32), **IMAGENET)  # the tiny bundles' preprocessing
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.chelsea()).crop((0, 0, 448, 288))  # whole 8x8 JPEG blocks either way round


@pytest.fixture(scope="module")
def explainer(tiny_bundle) -> camrt.Explainer:
    return camrt.Explainer(tiny_bundle, intra_op_threads=1)


def _one_line(exc: pytest.ExceptionInfo, path: Path, *needles: str) -> None:
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message


# ---------------------------------------------------------------------------------------------- as a person sees it
def test_an_exif_rotated_photo_is_explained_upright(tmp_path, chelsea, explainer) -> None:
    chelsea.save(tmp_path / "upright.jpg", quality=100, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # as phones write them: the pixels stored turned, "rotate 90 degrees clockwise to view"
    chelsea.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.jpg", quality=100, subsampling=0, exif=exif)
    upright, facts = decode_photo(tmp_path / "upright.jpg", PRE)
    turned, turned_facts = decode_photo(tmp_path / "phone.jpg", PRE)
    assert (facts.orientation, turned_facts.orientation) == (1, 6)
    # the same blocks transposed: libjpeg's IDCT rounds them in another order, so a pixel may move by one level
    assert np.abs(upright.astype(int) - turned).max() <= 1
    with Image.open(tmp_path / "phone.jpg") as raw:  # what was read before: the stored pixels, sideways
        sideways = np.asarray(resize_and_crop(raw.convert("RGB"), PRE))
    assert np.abs(upright.astype(int) - sideways).mean() > 10
    x = camrt.load_images([tmp_path / "upright.jpg", tmp_path / "phone.jpg"], explainer)
    out = explainer.explain(x, "scorecam", "paper")
    assert out.targets[0] == out.targets[1]
    # one level of input moves this min-max map by 0.005 (measured); 0.02 leaves room and is far below the
    # difference of a sideways photo's map
    assert np.abs(out.saliency[0] - out.saliency[1]).max() < 0.02
    wrong = explainer.explain(camrt.load_images([Image.fromarray(sideways)], explainer), "scorecam", "paper")
    assert np.abs(out.saliency[0] - wrong.saliency[0]).max() > 0.1


def test_a_16_bit_photo_reads_as_its_8_bit_copy(tmp_path, chelsea, explainer) -> None:
    gray = np.asarray(chelsea.convert("L"))
    Image.fromarray(gray).save(tmp_path / "8bit.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "16bit.png")  # 0..255 -> 0..65535
    with Image.open(tmp_path / "16bit.png") as opened:
        assert opened.mode.startswith("I")
    eight, _ = decode_photo(tmp_path / "8bit.png", PRE)
    sixteen, facts = decode_photo(tmp_path / "16bit.png", PRE)
    assert facts.mode.startswith("I") and sixteen.mean() < 200  # not all white
    np.testing.assert_array_equal(sixteen, eight)
    x = camrt.load_images([tmp_path / "8bit.png", tmp_path / "16bit.png"], explainer)
    logits = explainer.clean_pass(x)[1]
    assert logits[0].argmax() == logits[1].argmax()
    np.testing.assert_array_equal(logits[0], logits[1])


@pytest.mark.parametrize("background", [None, (0, 0, 0), "#3366cc"])
def test_alpha_is_composited_on_the_stated_background(chelsea, background) -> None:
    rgb = np.asarray(chelsea)
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[:, 150:300], alpha[:, 300:] = 128, 255  # transparent, half, opaque
    hidden = rgb.copy()
    hidden[:, :150] = (255, 0, 255)  # what RGB holds under the transparency must not show
    rgba = Image.fromarray(np.dstack([hidden, alpha]), "RGBA")
    seen = np.asarray(load_image(rgba) if background is None else load_image(rgba, background=background))
    bg = np.array({None: (255, 255, 255), (0, 0, 0): (0, 0, 0), "#3366cc": (0x33, 0x66, 0xCC)}[background])
    a = alpha[..., None] / 255.0
    expected = hidden * a + bg * (1 - a)
    assert np.abs(seen - expected).max() <= 1  # PIL composites in 8-bit fixed point
    assert (seen[:, :150] == bg).all()


@pytest.mark.parametrize("mode, suffix", [("1", "png"), ("P", "png"), ("LA", "png"), ("CMYK", "jpg"), ("I", "tif"),
                                          ("F", "tif"), ("L", "png")])
def test_every_mode_reads_at_its_real_range(tmp_path, chelsea, mode, suffix) -> None:
    gray = np.asarray(chelsea.convert("L"))
    if mode == "I":
        image = Image.fromarray(gray.astype(np.int32) * 257, "I")
    elif mode == "F":
        image = Image.fromarray(gray.astype(np.float32) / 255, "F")
    else:
        image = chelsea.convert(mode)
    path = tmp_path / f"photo.{suffix}"
    image.save(path)
    seen, facts = decode_photo(path, PRE)
    reference, _ = decode_photo(chelsea if mode in ("P", "CMYK") else chelsea.convert("L"), PRE)
    assert facts.mode == Image.open(path).mode and seen.dtype == np.uint8
    limit = 90 if mode == "1" else 12  # a one-bit photo is dithered black and white; JPEG's CMYK is lossy
    assert np.abs(seen.astype(int) - reference).mean() < limit, mode


def test_background_is_checked() -> None:
    with pytest.raises(InputError, match="^background: "):
        load_image(Image.new("RGBA", (4, 4)), background="not a colour")
    with pytest.raises(InputError, match="^background: "):
        load_image(Image.new("RGBA", (4, 4)), background=(0, 0, 300))


# ---------------------------------------------------------------------------------------------- bounded
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_one_line_and_never_opened(tmp_path) -> None:
    fifo = tmp_path / "stuck.jpg"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(InputError) as info:
        regular_file(fifo)
    _one_line(info, fifo, "not a regular file (a FIFO)")
    item = decode(0, fifo, None, PRE)
    assert item.x is None and item.error == str(info.value)
    with pytest.raises(InputError, match="a FIFO"):
        camrt.runtime.dataset.discover(fifo)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_skipped_by_explain_and_explain_dataset(tmp_path, named_bundle, chelsea) -> None:
    """As real subprocesses, under a timeout: a hang fails the test instead of stalling the suite."""
    fifo = tmp_path / "stuck.jpg"
    os.mkfifo(fifo)
    chelsea.save(tmp_path / "cat.jpg")
    (tmp_path / "list.csv").write_text(f"path\n{fifo}\n{tmp_path / 'cat.jpg'}\n")
    commands = {
        "explain": ["explain", named_bundle, fifo, tmp_path / "cat.jpg", "--out", tmp_path / "maps", "-q"],
        "explain-dataset": ["explain-dataset", named_bundle, tmp_path / "list.csv", "--out", tmp_path / "ds", "-q",
                            "--workers", "1"],
    }
    for name, argv in commands.items():
        done = subprocess.run([sys.executable, "-m", "camrt", *map(str, argv)], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert done.returncode == 2, (name, done.stderr)
        lines = [line for line in done.stderr.splitlines() if "stuck.jpg" in line]
        assert len(lines) == 1 and "not a regular file (a FIFO)" in lines[0], (name, done.stderr)
        assert "Traceback" not in done.stderr
    with open(tmp_path / "ds" / "index.csv", newline="") as handle:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    assert rows["stuck.jpg"]["status"] == "error" and rows["cat.jpg"]["status"] == "ok"


def test_a_symlink_loop_says_so(tmp_path) -> None:
    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    with pytest.raises(InputError) as info:
        load_image(tmp_path / "a.jpg")
    _one_line(info, tmp_path / "a.jpg", "symlink loop")


def test_a_100000_by_1_png_costs_little_and_is_one_line(tmp_path) -> None:
    """In a fresh process, so its peak memory is this decode's: a sliver that was resized to 2.5 GB before."""
    path = tmp_path / "sliver.png"
    Image.new("L", (100_000, 1), 128).save(path)
    script = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from camrt.runtime.bundle import Preprocessing
        from camrt.runtime.prefetch import decode
        pre = Preprocessing(resize=256, crop=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        item = decode(0, Path({str(path)!r}), None, pre)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)  # kB to MB on Linux
        print(item.error)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    grown, error = done.stdout.strip().splitlines()
    assert float(grown) < 100, done.stdout
    assert error.startswith(f"{path}: 100000 x 1 is more elongated than {MAX_ASPECT}:1")


def test_an_elongated_photo_within_the_limit_resizes_only_its_crop(chelsea) -> None:
    """A 100:1 strip resized as a whole would be 25,600 x 256 pixels; only the 224 x 224 crop is resized, which
    agrees with the whole resize to one level."""
    strip = chelsea.resize((4400, 44))
    pre = Preprocessing(resize=256, crop=(224, 224), **IMAGENET)
    whole = strip.resize((25600, 256), Image.Resampling.BILINEAR).crop((12688, 16, 12912, 240))
    part = resize_and_crop(strip, pre)
    assert part.size == (224, 224)
    assert np.abs(np.asarray(part).astype(int) - np.asarray(whole)).max() <= 1


def test_the_pixel_limit_is_checked_from_the_header(tmp_path) -> None:
    """Over PIL's own limit too: its DecompressionBombWarning becomes the file's one line, not a stray warning."""
    for size in ((9000, 8000), (10000, 9500)):  # over camrt's 64 M; over PIL's 89.5 M as well
        path = tmp_path / f"{size[0]}.png"
        Image.new("1", size).save(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(InputError) as info:
                load_image(path)
        _one_line(info, path, f"over camrt's limit of {MAX_PIXELS:,}")


def test_memory_error_is_one_image(tmp_path, chelsea, monkeypatch) -> None:
    chelsea.save(tmp_path / "cat.png")

    def exhausted(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Image.Image, "resize", exhausted)
    item = decode(0, tmp_path / "cat.png", None, PRE)
    assert item.x is None and item.error.startswith(f"{tmp_path / 'cat.png'}: ") and "\n" not in item.error


# ---------------------------------------------------------------------------------------------- records
def test_records_say_what_decoding_did(tmp_path, named_bundle, chelsea, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    chelsea.transpose(Image.Transpose.ROTATE_90).save(data / "phone.jpg", exif=exif)
    chelsea.resize((12, 10)).save(data / "tiny.png")  # short side 10, resized up to 37
    chelsea.convert("LA").save(data / "gray.png")
    expected = {"phone.jpg": (6, "RGB", False), "tiny.png": (1, "RGB", True), "gray.png": (1, "LA", False)}

    def check(records, name):
        got = {Path(r["path"]).name: (int(r["orientation"]), r["mode"], str(r["upscaled"]) in ("True", "true"))
               for r in records}
        assert got == expected, name
        warned = [r for r in records if r["warning"]]
        assert [Path(r["path"]).name for r in warned] == ["tiny.png"]
        assert "upscaled from 12 x 10" in warned[0]["warning"]
        err = capsys.readouterr().err
        assert err.count("upscaled from 12 x 10") == 1 and str(data / "tiny.png") in err, (name, err)

    assert main(["explain", str(named_bundle), str(data), "--out", str(tmp_path / "maps"), "-q"]) == 0
    check(json.loads((tmp_path / "maps" / "summary.json").read_text())["images"], "explain")
    assert main(["evaluate", str(named_bundle), str(data), "--out", str(tmp_path / "eval"), "-q", "-m", "scorecam",
                 "--causal", "none"]) == 0
    check([json.loads(line) for line in (tmp_path / "eval" / "records.jsonl").read_text().splitlines()], "evaluate")
    assert main(["explain-dataset", str(named_bundle), str(data), "--out", str(tmp_path / "ds"), "-q"]) == 0
    with open(tmp_path / "ds" / "index.csv", newline="") as handle:
        check(list(csv.DictReader(handle)), "explain-dataset")


def test_load_images_takes_a_bundle_folder_a_bundle_or_an_explainer(tiny_bundle, explainer, chelsea) -> None:
    batch = camrt.load_images([chelsea], tiny_bundle)
    assert batch.shape == (1, *explainer.bundle.manifest.input_shape) and batch.dtype == np.float32
    np.testing.assert_array_equal(camrt.load_images(chelsea, explainer.bundle), batch)
    np.testing.assert_array_equal(explainer.preprocess([chelsea]), batch)
    with pytest.raises(InputError, match="^bundle: "):
        camrt.load_images([chelsea], 3)


def test_the_background_flag_reaches_the_decoder(tmp_path, named_bundle, chelsea, capsys) -> None:
    rgba = np.dstack([np.asarray(chelsea), np.full(chelsea.size[::-1], 255, np.uint8)])
    rgba[:, :224, 3] = 0  # the left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut-out.png")
    maps = {}
    for colour in ("white", "0,0,0"):
        out = tmp_path / colour
        assert main(["explain", str(named_bundle), str(tmp_path / "cut-out.png"), "--out", str(out), "-q",
                     "--background", colour]) == 0
        maps[colour] = np.load(out / "cut-out.npy")
        assert json.loads((out / "summary.json").read_text())["images"][0]["mode"] == "RGBA"
    assert np.abs(maps["white"] - maps["0,0,0"]).max() > 0.01
    capsys.readouterr()
    assert main(["explain", str(named_bundle), str(tmp_path / "cut-out.png"), "--out", str(tmp_path / "x"),
                 "--background", "0,0,999"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--background" in err[0]


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path, chelsea) -> None:
    """``draft`` decodes a 1804 x 1200 JPEG at 902 x 600 (still over twice the 384 x 256 resize): within two
    levels of the full decode, and not identical to it (so the reduced decode did run)."""
    chelsea.resize((1804, 1200), Image.Resampling.BICUBIC).save(tmp_path / "big.jpg", quality=95)
    pre = Preprocessing(resize=256, crop=(224, 224), **IMAGENET)
    drafted, _ = decode_photo(tmp_path / "big.jpg", pre)
    with Image.open(tmp_path / "big.jpg") as full:
        reference = np.asarray(resize_and_crop(full.convert("RGB"), pre))
    difference = np.abs(drafted.astype(int) - reference)
    assert difference.max() <= 2 and 0 < difference.mean() < 1
