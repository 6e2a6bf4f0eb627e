"""The exporter: splitting at a layer, ONNX export, verification with ONNX Runtime, manifests and model specs."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn

from camrt.errors import ExportError
from camrt.exporter import export, split_model
from camrt.exporter.models import load_model
from camrt.runtime.backends.torch import FEATURES_PT2, HEAD_PT2
from camrt.runtime.bundle import ACTIVATIONS, FEATURES_FILE, HEAD_FILE, IMAGE, LOGITS, MANIFEST, sha256_file

# (torchvision model, input size, default layer): the smallest sizes that keep the layer's map above 1x1.
TORCHVISION = [
    ("resnet18", 64, "layer4"),
    ("resnet50", 64, "layer4"),
    ("vgg16", 64, "features"),
    ("vgg19", 64, "features"),
    ("squeezenet1_1", 64, "classifier.2"),
    ("mobilenet_v3_large", 64, "features"),
    ("densenet121", 64, "features"),
    ("efficientnet_b0", 64, "features"),
]
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _calibrated(model: nn.Module, size: int) -> nn.Module:
    """Re-estimate batch-norm statistics on random images: random-init mobilenet/efficientnet otherwise output
    ~1e-14, where any verification tolerance would pass."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batch
    if norms:
        model.train()
        with torch.no_grad():
            model(torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0)))
    return model.eval()


def _run(path, name: str, array: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: array})[0]


@pytest.mark.parametrize(("name", "size", "layer"), TORCHVISION, ids=[t[0] for t in TORCHVISION])
def test_torchvision_model_exports_and_verifies(name, size, layer, tmp_path):
    torch.manual_seed(0)
    model = _calibrated(torchvision.models.get_model(name, weights=None), size)
    start = time.perf_counter()
    # torch.export programs are tested on the small models; VGG's 0.5 GB head would only add minutes here
    bundle = export(model, None, tmp_path, input_shape=(3, size, size), model_name=name,
                    torch_programs=not name.startswith("vgg"), random_weights=True)
    print(f"{name}: exported in {time.perf_counter() - start:.1f} s at layer {bundle.manifest.target_layer}")
    m = bundle.manifest
    assert m.target_layer == layer
    assert m.num_classes == 1000 and m.input_shape == (3, size, size)
    ver = m.verification
    for key in ("activations", "head_logits", "composed_logits"):
        assert 0 <= ver[f"{key}_max_abs_diff"] <= ver[f"{key}_tolerance"]
    # Batch 3 (not the traced batch of 2) through the two graphs reproduces model(x).
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        reference = model(x).numpy()
    activations = _run(bundle.features_path, IMAGE, x.numpy())
    assert activations.shape == (3, *m.activation_shape)
    assert m.activation_shape[1] * m.activation_shape[2] > 1
    logits = _run(bundle.head_path, ACTIVATIONS, activations)
    assert np.abs(logits - reference).max() <= 1e-4 * max(1.0, np.abs(reference).max())


def test_efficientnet_lite0_real_weights_classifies_a_cat(tmp_path):
    from PIL import Image
    from skimage import data

    model, info = load_model("efficientnet_lite0")
    assert info["input_size"] == (3, 224, 224) and len(info["class_names"]) == 1000
    bundle = export(
        model,
        None,
        tmp_path,
        input_shape=info["input_size"],
        mean=info["mean"],
        std=info["std"],
        class_names=info["class_names"],
        model_name=info["name"],
        resize=info["resize"],
    )
    m = bundle.manifest
    assert m.target_layer == "_swish" and m.activation_shape == (1280, 7, 7)  # its last call: after _conv_head
    assert m.verification["composed_logits_max_abs_diff"] <= m.verification["composed_logits_tolerance"]
    pre = m.preprocessing
    assert (pre.resize, pre.crop) == (256, (224, 224))
    image = Image.fromarray(data.chelsea())
    scale = pre.resize / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    x = ((pixels - np.array(pre.mean)) / np.array(pre.std)).transpose(2, 0, 1)[None].astype(np.float32)
    x = np.concatenate([x, x[:, :, :, ::-1]])  # batch 2: the photo and its mirror image
    logits = _run(bundle.head_path, ACTIVATIONS, _run(bundle.features_path, IMAGE, x))
    assert all(int(i) in CAT_CLASSES for i in logits.argmax(1)), [bundle.class_name(int(i)) for i in logits.argmax(1)]
    with pytest.raises(ExportError, match="'_blocks': never called as a module"):  # a ModuleList, only iterated
        split_model(model, "_blocks", (3, 224, 224))


def test_default_layer_of_resnet18_is_layer4():
    features, head, layer = split_model(torchvision.models.resnet18(weights=None), None, (3, 64, 64))
    assert layer == "layer4"
    x = torch.randn(2, 3, 64, 64)
    assert features(x).shape == (2, 512, 2, 2) and head(features(x)).shape == (2, 1000)


@pytest.mark.parametrize("layer", ["layer4.1.conv2", "layer4.1.bn2"])
def test_cut_inside_a_residual_block_is_a_skip_connection_error(layer):
    with pytest.raises(ExportError, match="skip connection") as info:
        split_model(torchvision.models.resnet18(weights=None), layer, (3, 64, 64))
    message = str(info.value)
    assert layer in message and "e.g. layer4.1" in message and "\n" not in message


def test_unknown_layer_name_names_it_and_suggests():
    with pytest.raises(ExportError, match="target_layer 'layr4'") as info:
        split_model(torchvision.models.resnet18(weights=None), "layr4", (3, 64, 64))
    assert "layer4" in str(info.value) and "\n" not in str(info.value)


def test_shared_module_is_cut_at_its_last_call(tiny_cnn):
    model = tiny_cnn()
    features, head, layer = split_model(model, None, (3, 32, 32))
    assert layer == "act"  # the shared ReLU finishes last, after conv: 16 channels, not the stem's 8
    x = torch.randn(2, 3, 32, 32)
    assert features(x).shape == (2, 16, 8, 8)
    torch.testing.assert_close(head(features(x)), model(x), rtol=0, atol=1e-6)


def test_skip_connection_in_tiny_model_suggests_the_block(tiny_cnn):
    with pytest.raises(ExportError, match=r"block\.bn2.*reads .*skip connection.*e\.g\. block$"):
        split_model(tiny_cnn(), "block.bn2", (3, 32, 32))


def test_batch_size_read_of_the_input_follows_the_activations(tiny_cnn, tmp_path):
    model = tiny_cnn(batch_read=True)
    _, head, _ = split_model(model, "conv", (3, 32, 32))
    sizes = [n for n in head.graph.nodes if n.op == "call_method" and n.target == "size"]
    assert [n.args for n in sizes] == [(next(iter(head.graph.nodes)), 0)]  # reads the activations placeholder
    bundle = export(model, "conv", tmp_path, input_shape=(3, 32, 32))
    x = torch.randn(5, 3, 32, 32)
    logits = _run(bundle.head_path, ACTIVATIONS, _run(bundle.features_path, IMAGE, x.numpy()))
    np.testing.assert_allclose(logits, model(x).detach().numpy(), rtol=0, atol=1e-5)


def test_manifest_files_and_hashes(tiny_cnn, tmp_path):
    names = [f"class {i}" for i in range(5)]
    model = tiny_cnn().train()
    bundle = export(model, "block", tmp_path, input_shape=(3, 224, 224), class_names=names, model_name="tiny")
    assert model.training  # the caller's mode is restored
    programs = [FEATURES_PT2, HEAD_PT2]  # torch.export programs for the PyTorch backend
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([FEATURES_FILE, HEAD_FILE, MANIFEST, *programs])
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data["format"] == "camrt-bundle" and data["model_name"] == "tiny" and data["target_layer"] == "block"
    assert data["input_shape"] == [3, 224, 224] and data["activation_shape"] == [8, 112, 112]
    assert data["num_classes"] == 5 and data["class_names"] == names and data["opset"] == 18
    assert data["preprocessing"]["resize"] == 256 and data["preprocessing"]["crop"] == [224, 224]
    assert data["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    files = (FEATURES_FILE, HEAD_FILE, *programs)
    assert data["files"] == {name: sha256_file(tmp_path / name) for name in files}
    assert set(data["verification"]) >= {"rtol", "activations_max_abs_diff", "composed_logits_max_abs_diff"}
    for file, inp, out in ((FEATURES_FILE, IMAGE, ACTIVATIONS), (HEAD_FILE, ACTIVATIONS, LOGITS)):
        graph = onnx.load(str(tmp_path / file)).graph
        assert [i.name for i in graph.input] == [inp] and [o.name for o in graph.output] == [out]
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic batch dimension
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)
    assert bundle.class_name(4) == "class 4"


def test_opset_above_torchscript_uses_the_dynamo_exporter(tiny_cnn, tmp_path):
    bundle = export(tiny_cnn(batch_read=True), None, tmp_path, input_shape=(3, 32, 32), opset=21, torch_programs=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([FEATURES_FILE, HEAD_FILE, MANIFEST])  # no .data
    for path in (bundle.features_path, bundle.head_path):
        model = onnx.load(str(path))
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [21]
    assert bundle.manifest.opset == 21 and bundle.manifest.activation_shape == (16, 8, 8)


def test_verification_failure_leaves_no_manifest(tiny_cnn, tmp_path, monkeypatch):
    from camrt.exporter import onnx_export

    export(tiny_cnn(), None, tmp_path, input_shape=(3, 32, 32))  # an old bundle in the folder
    monkeypatch.setattr(onnx_export, "RTOL", -1.0)  # every difference, even 0, is now above tolerance
    with pytest.raises(ExportError, match=r"^features\.onnx: ONNX Runtime activations differ from torch"):
        export(tiny_cnn(), None, tmp_path, input_shape=(3, 32, 32))
    assert not (tmp_path / MANIFEST).exists()


class _ResidualTail(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv0(x)
        return self.fc((self.conv1(x) + x).mean((2, 3)))


def test_default_layer_skips_a_cut_inside_a_residual_connection():
    _, _, layer = split_model(_ResidualTail(), None, (3, 16, 16))
    assert layer == "conv0"  # conv1 finishes last, but its output is added to conv0's after it


class _TupleOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.conv(x)
        return self.fc(maps.mean((2, 3))), maps


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.conv(x)
        return maps.mean((2, 3)) if maps.sum() > 0 else -maps.mean((2, 3))


@pytest.mark.parametrize(
    ("model", "kwargs", "pattern"),
    [
        (_TupleOutput(), {}, "model: forward returns a tuple"),
        (_DataDependent(), {"target_layer": "conv"}, "model: torch.fx cannot trace"),
        (None, {"input_shape": (3, 32)}, "input_shape:"),
        (None, {"opset": 9}, "opset:"),
        (None, {"class_names": ["a", "b"]}, "class_names: got 2 names for a model with 5 classes"),
        (None, {"std": (0.2, 0.0, 0.2)}, "std:"),
        (None, {"resize": 16}, "resize:"),
        (None, {"target_layer": "fc"}, "target_layer 'fc': outputs"),
        (None, {"target_layer": "pool"}, "target_layer 'pool': outputs a 1x1 map"),
    ],
    ids=["tuple-output", "untraceable", "input-shape", "opset", "class-names", "std", "resize", "fc", "pool"],
)
def test_bad_arguments_are_one_line_export_errors(model, kwargs, pattern, tiny_cnn, tmp_path):
    kwargs = {"target_layer": None, "input_shape": (3, 32, 32), **kwargs}
    with pytest.raises(ExportError, match=pattern) as info:
        export(model if model is not None else tiny_cnn(), out_dir=tmp_path / "b", **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "b" / MANIFEST).exists()


def test_load_model_specs(tmp_path):
    model, info = load_model("squeezenet1_1", random_weights=True)
    assert info["random_weights"] is True
    assert isinstance(model, nn.Module) and not model.training
    assert info["name"] == "squeezenet1_1" and info["class_names"][281] == "tabby"
    assert info["input_size"] == (3, 224, 224) and info["resize"] == 256 and info["mean"] == (0.485, 0.456, 0.406)
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    reloaded, _ = load_model("torchvision.models:squeezenet1_1", str(weights))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    with pytest.raises(ExportError, match="does not fit model squeezenet1_0"):
        load_model("squeezenet1_0", str(weights))
    with pytest.raises(ExportError, match="model 'resnet_18': unknown.*resnet18"):
        load_model("resnet_18")
    with pytest.raises(ExportError, match="model 'nosuch.module:make': cannot import"):
        load_model("nosuch.module:make")
