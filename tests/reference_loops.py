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
