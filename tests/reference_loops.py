"""Reference loops written after the authors' code, one masked image per forward pass, for parity tests.

paper Score-CAM: haofanwang/Score-CAM cam/scorecam.py; SS-CAM: r0cketr1kky/SS-CAM cam/sscam.py SSCAM2;
IS-CAM: ankitaghosh9/Variations-on-Score-CAM IS_CAM; ScoreCAM++: AquillaNatus/ScoreCAMpp
cam/scorecampp_variants.py ScoreCAM_both / ScoreCAM_norm. Noise comes in as given standard normals z so that
both sides see the same draws. Each returns (weights (K,), map (H, W)) for one image (1, 3, H, W).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _gate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid-relu":
        return torch.sigmoid(F.relu(x))
    if name == "mish":
        return torch.nn.Mish()(x)
    if name == "swish":
        return torch.nn.SiLU()(x)
    raise ValueError(name)


def _finish(saliency: torch.Tensor) -> np.ndarray:
    saliency = F.relu(saliency)
    lo, hi = saliency.min(), saliency.max()
    if lo == hi:
        return np.zeros(saliency.shape[-2:], np.float32)
    return ((saliency - lo) / (hi - lo))[0, 0].numpy()


@torch.no_grad()
def _setup(model, features, x, class_idx):
    logit = model(x)
    c = int(logit.argmax(1)) if class_idx is None else int(class_idx)
    return c, features(x)


@torch.no_grad()
def paper_scorecam(model, features, x, class_idx=None):
    c, acts = _setup(model, features, x, class_idx)
    h, w = x.shape[-2:]
    k = acts.shape[1]
    weights = np.zeros(k)
    saliency = torch.zeros((1, 1, h, w))
    for i in range(k):
        s = F.interpolate(acts[:, i : i + 1], size=(h, w), mode="bilinear", align_corners=False)
        if s.max() == s.min():
            continue
        norm = (s - s.min()) / (s.max() - s.min())
        score = F.softmax(model(x * norm), dim=1)[0][c]
        weights[i] = float(score)
        saliency += score * s
    return weights, _finish(saliency)


@torch.no_grad()
def paper_sscam(model, features, x, z, class_idx=None, n=35, multiplier=2.0):
    """z[s, k]: standard normals (3, H, W); the authors' code draws normal_(0, sigma**2)."""
    c, acts = _setup(model, features, x, class_idx)
    h, w = x.shape[-2:]
    k = acts.shape[1]
    weights = np.zeros(k)
    saliency = torch.zeros((1, 1, h, w))
    for i in range(k):
        s = F.interpolate(acts[:, i : i + 1], size=(h, w), mode="bilinear", align_corners=False)
        if s.max() == s.min():
            continue
        norm = (s - s.min()) / (s.max() - s.min())
        masked = x * norm
        if (torch.max(masked) - torch.min(masked)).item() == 0:
            continue
        sigma = multiplier / (torch.max(masked) - torch.min(masked)).item()
        scores = []
        for j in range(n):
            noise = torch.from_numpy(z[j, i]).unsqueeze(0) * np.float32(sigma**2)
            scores.append(F.softmax(model(masked + noise), dim=1)[0][c])
        score = sum(scores) / len(scores)
        weights[i] = float(score)
        saliency += score * s
    return weights, _finish(saliency)


@torch.no_grad()
def paper_iscam(model, features, x, class_idx=None, n=10):
    c, acts = _setup(model, features, x, class_idx)
    h, w = x.shape[-2:]
    k = acts.shape[1]
    weights = np.zeros(k)
    saliency = torch.zeros((1, 1, h, w))
    for i in range(k):
        s = F.interpolate(acts[:, i : i + 1], size=(h, w), mode="bilinear", align_corners=False)
        if s.max() == s.min():
            continue
        norm = (s - s.min()) / (s.max() - s.min())
        masked = x * norm
        total, coeff = 0.0, 0.0
        for j in range(n):
            coeff += (j + 1) / n
            total = total + F.softmax(model(coeff * masked), dim=1)[0][c]
        score = total / n
        weights[i] = float(score)
        saliency += score * s
    return weights, _finish(saliency)


@torch.no_grad()
def scorecampp(model, features, x, class_idx=None, gate="tanh", combine="gated"):
    c, acts = _setup(model, features, x, class_idx)
    h, w = x.shape[-2:]
    k = acts.shape[1]
    weights = np.zeros(k)
    saliency = torch.zeros((1, 1, h, w))
    for i in range(k):
        s = F.interpolate(acts[:, i : i + 1], size=(h, w), mode="bilinear", align_corners=False)
        gated = _gate(s, gate)
        score = F.softmax(model(x * gated), dim=1)[0][c]
        weights[i] = float(score)
        saliency += score * (gated if combine == "gated" else s)
    return weights, _finish(saliency)


# ---------------------------------------------------------------------------------------------- RISE
def rise_gkern(klen: int = 11, nsig: float = 5.0) -> torch.Tensor:
    """eclique/RISE evaluation.py gkern: scipy's gaussian_filter of a delta, one kernel per channel."""
    from scipy.ndimage import gaussian_filter

    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    for c in range(3):
        kern[c, c] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_blur(x: torch.Tensor) -> torch.Tensor:
    """RISE's insertion substrate: conv2d with gkern(11, 5), zero padding klen // 2."""
    return F.conv2d(x, rise_gkern(), padding=11 // 2)


@torch.no_grad()
def rise_causal_metric(model, img: torch.Tensor, explanation: np.ndarray, mode: str, step: int) -> np.ndarray:
    """RISE CausalMetric.single_run (verbose 0) on one image (1, 3, H, W): scores at every step.

    model returns probabilities (RISE wraps its models in a softmax); deletion goes to zeros, insertion starts
    from rise_blur; the class is the one predicted on img.
    """
    hw = img.shape[2] * img.shape[3]
    c = int(model(img).argmax(1))
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start, finish = img.clone(), torch.zeros_like(img)
    else:
        start, finish = rise_blur(img), img.clone()
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1), axis=-1)
    for i in range(n_steps + 1):
        scores[i] = float(model(start)[0, c])
        if i < n_steps:
            coords = salient_order[:, step * i:step * (i + 1)]
            start.numpy().reshape(1, 3, hw)[0, :, coords] = finish.numpy().reshape(1, 3, hw)[0, :, coords]
    return scores


def rise_auc(arr: np.ndarray) -> float:
    """RISE evaluation.py auc."""
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1))


# ---------------------------------------------------------------------------------------------- head-only methods
@torch.no_grad()
def paper_ablationcam(model, features, head, x, class_idx=None):
    """Desai & Ramaswamy's Ablation-CAM, one ablated channel per head pass: channel k set to 0, w_k = (y - y_k) / y
    on the logit, map as the Score-CAM paper's (ReLU(Up(sum w_k A_k)), min-max)."""
    c, acts = _setup(model, features, x, class_idx)
    y = float(head(acts)[0, c])
    k = acts.shape[1]
    weights = np.zeros(k)
    for i in range(k):
        ablated = acts.clone()
        ablated[:, i] = 0
        weights[i] = (y - float(head(ablated)[0, c])) / y
    low = (torch.from_numpy(weights).float()[None, :, None, None] * acts).sum(1, keepdim=True)
    return weights, _finish(F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False))


def _recipro_mosaic(feature_map: torch.Tensor, nc: int, h: int, w: int, is_gaussian: bool) -> torch.Tensor:
    """sybyun/ReciproCAM src/recipro_cam.py ReciproCam._mosaic_feature, as written (device cpu)."""
    gaussian = torch.tensor([[1 / 16.0, 1 / 8.0, 1 / 16.0], [1 / 8.0, 1 / 4.0, 1 / 8.0], [1 / 16.0, 1 / 8.0, 1 / 16.0]])
    if not is_gaussian:
        feature_map_repeated = feature_map.repeat(h * w, 1, 1, 1)
        mosaic_feature_map_mask = torch.zeros(h * w, nc, h, w)
        spatial_order = torch.arange(h * w).reshape(h, w)
        for i in range(h):
            for j in range(w):
                k = spatial_order[i, j]
                mosaic_feature_map_mask[k, :, i, j] = torch.ones(nc)
        return feature_map_repeated * mosaic_feature_map_mask
    new_features = torch.zeros(h * w, nc, h, w)
    for b in range(h * w):
        for i in range(h):
            kx_s, kx_e = max(i - 1, 0), min(i + 1, h - 1)
            sx_s = 1 if i == 0 else 0
            sx_e = 1 if i == h - 1 else 2
            for j in range(w):
                ky_s, ky_e = max(j - 1, 0), min(j + 1, w - 1)
                sy_s = 1 if j == 0 else 0
                sy_e = 1 if j == w - 1 else 2
                if b == i * w + j:
                    r_feature_map = feature_map[0, :, i, j].reshape(feature_map.shape[1], 1, 1).repeat(1, 3, 3)
                    score_map = r_feature_map * gaussian.repeat(feature_map.shape[1], 1, 1)
                    new_features[b, :, kx_s:kx_e + 1, ky_s:ky_e + 1] = score_map[:, sx_s:sx_e + 1, sy_s:sy_e + 1]
    return new_features


@torch.no_grad()
def paper_reciprocam(model, features, head, x, class_idx=None, gaussian=False):
    """ReciproCam.__call__ for one image: the head on [feature; mosaic] (what its forward hook returns), softmax,
    the target's column reshaped to h x w and min-max'ed (_get_class_activaton_map). Returns (native h x w, the
    map bilinearly upsampled to H x W, max / (max - min) of the scores: how much the min-max magnifies their
    fp32 rounding)."""
    feature = features(x)
    _, nc, h, w = feature.shape
    prediction = torch.softmax(head(torch.cat((feature, _recipro_mosaic(feature, nc, h, w, gaussian)), 0)), dim=1)
    index = int(prediction[0].argmax()) if class_idx is None else int(class_idx)
    cam = prediction[1:, index].reshape((h, w))
    conditioning = float(cam.max() / (cam.max() - cam.min()))  # fp32 rounding of the scores, magnified
    cam_min = cam.min()
    cam = (cam - cam_min) / (cam.max() - cam_min)
    up = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return cam.numpy(), up.numpy(), conditioning


@torch.no_grad()
def openvino_xai_reciprocam(features, head, x, class_idx):
    """openvino_xai methods/white_box/torch.py TorchReciproCAM (optimize_gap=False, embed_scaling=True) for one
    image: the logits of the mosaic, per-class _normalize_map to uint8; the target class's map (h x w) / 255."""
    output = features(x)
    batch_size, c, h, w = output.shape
    feature_map_repeated = output[0].repeat(h * w, 1, 1, 1)
    mosaic_feature_map_mask = torch.zeros(h * w, c, h, w)
    spatial_order = torch.arange(h * w).reshape(h, w)
    for i in range(h):
        for j in range(w):
            mosaic_feature_map_mask[spatial_order[i, j], :, i, j] = torch.ones(c)
    logits = head(torch.cat([output, feature_map_repeated * mosaic_feature_map_mask]))
    num_classes = logits.shape[1]
    saliency_maps = logits[batch_size:].reshape([batch_size, h * w, num_classes]).transpose(1, 2)
    saliency_maps = saliency_maps.reshape((batch_size * num_classes, h * w))
    max_values = saliency_maps.max(dim=-1, keepdim=True).values
    min_values = saliency_maps.min(dim=-1, keepdim=True).values
    saliency_maps = (255 * (saliency_maps - min_values) / (max_values - min_values + 1e-12)).to(torch.uint8)
    return saliency_maps.reshape([batch_size, num_classes, h, w])[0, int(class_idx)].numpy().astype(np.float32) / 255


def gradcam_run(cam, x: np.ndarray, targets) -> tuple[np.ndarray, np.ndarray]:
    """(channel weights (B, K), maps (B, H, W)) of a pytorch-grad-cam ``cam`` on ``x`` for ``targets``: its own
    call, with ``get_cam_weights`` wrapped to keep what it returns."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    captured = []
    original = cam.get_cam_weights
    cam.get_cam_weights = lambda *a, **k: captured.append(original(*a, **k)) or captured[-1]
    maps = cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return captured[0], maps
