"""Image I/O: preprocessing matches torchvision's PIL pipeline, bad files fail in one line, overlays match grad-cam."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from camrt.errors import InputError
from camrt.runtime.atomic import atomic_write
from camrt.runtime.bundle import Preprocessing
from camrt.runtime.overlay import JET_LUT, colorize, overlay, save_overlay
from camrt.runtime.preprocess import load_batch, load_image, original_for_overlay, preprocess

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.chelsea())  # 451 x 300 RGB


@pytest.mark.parametrize(
    "resize, crop",
    [(256, (224, 224)), (70, (64, 48)), (300, (300, 300)), (40, (64, 64))],  # the last one pads like CenterCrop
)
def test_matches_torchvision(chelsea: Image.Image, resize: int, crop: tuple[int, int]) -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    pre = Preprocessing(resize=resize, crop=crop, **IMAGENET)
    reference = transforms.Compose([
        transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor(),
        transforms.Normalize(IMAGENET["mean"], IMAGENET["std"]),
    ])(chelsea).numpy()
    ours = preprocess(chelsea, pre)
    assert ours.shape == (3, *crop) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-5


def test_original_for_overlay_is_the_cropped_photo(chelsea: Image.Image) -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    pre = Preprocessing(resize=80, crop=(64, 72), **IMAGENET)
    expected = np.asarray(transforms.CenterCrop((64, 72))(transforms.Resize(80)(chelsea)))
    rgb = original_for_overlay(chelsea, pre)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 72, 3)
    np.testing.assert_array_equal(rgb, expected)


def test_paths_and_pil_images_agree(tmp_path, chelsea: Image.Image) -> None:
    pre = Preprocessing(resize=36, crop=(32, 32), **IMAGENET)
    chelsea.save(tmp_path / "cat.png")
    rgba = chelsea.convert("RGBA")
    batch = load_batch([tmp_path / "cat.png", str(tmp_path / "cat.png"), chelsea, rgba], pre)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == np.float32
    for other in batch[1:]:
        np.testing.assert_array_equal(other, batch[0])
    assert load_image(chelsea.convert("L")).mode == "RGB"
    assert load_batch(chelsea, pre).shape == (1, 3, 32, 32)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncated_jpeg(chelsea: Image.Image) -> bytes:
    buffer = io.BytesIO()
    chelsea.save(buffer, format="JPEG")
    return buffer.getvalue()[:2000]


@pytest.mark.parametrize(
    "name, make, expected",
    [
        ("noise.jpg", lambda p, img: _write(p, np.random.default_rng(0).bytes(512)), "not an image"),
        ("photo.txt", lambda p, img: _write(p, b"just some notes\n"), "not an image"),
        ("empty.png", lambda p, img: _write(p, b""), "not an image"),
        ("cut.jpg", lambda p, img: _write(p, _truncated_jpeg(img)), "corrupt or truncated"),
        ("missing.jpg", lambda p, img: p, "file not found"),
        ("folder.jpg", lambda p, img: (p.mkdir(), p)[1], "is a directory"),
    ],
)
def test_bad_files_name_themselves(tmp_path, chelsea: Image.Image, name: str, make, expected: str) -> None:
    path = make(tmp_path / name, chelsea)
    with pytest.raises(InputError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
    with pytest.raises(InputError, match=name):
        load_batch([chelsea, path], Preprocessing(resize=36, crop=(32, 32), **IMAGENET))


def test_a_corrupt_pil_image_is_one_line(chelsea: Image.Image) -> None:
    lazy = Image.open(io.BytesIO(_truncated_jpeg(chelsea)))  # opens; decoding fails later
    with pytest.raises(InputError, match="^image: cannot decode this PIL image"):
        load_image(lazy)


def test_other_inputs_are_refused() -> None:
    pre = Preprocessing(resize=36, crop=(32, 32), **IMAGENET)
    with pytest.raises(InputError, match="^image: "):
        load_image(np.zeros((4, 4, 3), np.uint8))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="^images: no images"):
        load_batch([], pre)
    with pytest.raises(InputError, match="^interpolation: "):
        preprocess(Image.new("RGB", (8, 8)), Preprocessing(36, (32, 32), interpolation="cubic-ish", **IMAGENET))


# ---------------------------------------------------------------------------------------------- overlays
def test_jet_is_opencv_jet() -> None:
    assert JET_LUT.shape == (256, 3) and JET_LUT.dtype == np.uint8
    assert tuple(JET_LUT[0]) == (0, 0, 128) and tuple(JET_LUT[255]) == (128, 0, 0)  # dark blue to dark red
    assert tuple(colorize(np.array([[-1.0, 2.0]]))[0, 1]) == (128, 0, 0)  # clipped to [0, 1]
    cv2 = pytest.importorskip("cv2")
    reference = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]
    assert np.abs(reference.astype(int) - JET_LUT).max() <= 1


def test_overlay_matches_show_cam_on_image() -> None:
    pytest.importorskip("cv2")
    image_utils = pytest.importorskip("pytorch_grad_cam.utils.image")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    saliency = rng.random((24, 20), dtype=np.float32)
    reference = image_utils.show_cam_on_image(rgb.astype(np.float32) / 255, saliency, use_rgb=True)
    assert np.abs(reference.astype(int) - overlay(rgb, saliency)).max() <= 1


def test_overlay_stretches_a_smaller_map_and_checks_shapes() -> None:
    rgb = np.full((16, 12, 3), 128, np.uint8)
    assert overlay(rgb, np.ones((4, 3), np.float32)).shape == (16, 12, 3)
    with pytest.raises(InputError, match="^saliency: "):
        overlay(rgb, np.ones((1, 4, 3), np.float32))
    with pytest.raises(InputError, match="^rgb: "):
        overlay(rgb[..., 0], np.ones((16, 12), np.float32))


def test_save_overlay_writes_atomically(tmp_path) -> None:
    rgb = np.zeros((8, 10, 3), np.uint8)
    path = save_overlay(rgb, np.linspace(0, 1, 80, dtype=np.float32).reshape(8, 10), tmp_path / "map.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (10, 8) and image.mode == "RGB"
    assert sorted(os.listdir(tmp_path)) == ["map.png"]

    def fail(handle) -> None:
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "map.png", fail)
    assert sorted(os.listdir(tmp_path)) == ["map.png"]  # the old file stays whole, no temporary file is left
    with Image.open(tmp_path / "map.png") as image:
        assert image.size == (10, 8)


def test_a_warning_of_another_file_during_a_header_read_is_not_this_files_error(tmp_path, monkeypatch):
    """The warnings capture is process-wide: a ResourceWarning of some other file (a server's upload, collected
    while this header is read) must not fail this photo; PIL's own warnings (bad headers) still do."""
    import warnings

    from PIL import Image as PILImage

    from camrt.runtime import preprocess

    path = tmp_path / "ok.png"
    PILImage.new("RGB", (8, 6)).save(path)
    real_open = PILImage.open

    def noisy_open(*args, **kwargs):
        warnings.warn("Unclosed file <tempfile.SpooledTemporaryFile>", ResourceWarning, stacklevel=1)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(preprocess.Image, "open", noisy_open)
    assert preprocess._open(path).size == (8, 6)

    def corrupt_open(*args, **kwargs):
        warnings.warn("Corrupt EXIF data", UserWarning, stacklevel=1)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(preprocess.Image, "open", corrupt_open)
    with pytest.raises(InputError, match="ok.png: Corrupt EXIF data"):
        preprocess._open(path)
