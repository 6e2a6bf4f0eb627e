"""Metric parity with the code that defines each variant, on the same maps, on fresh random inputs.

torchcam 0.5.0 ClassificationMetric / DeletionInsertionMetric and grad-cam 1.5.7 DropInConfidence /
IncreaseInConfidence / CamMultImageConfidenceChange run through their own code; RISE's CausalMetric through a
loop written after eclique/RISE evaluation.py (tests/reference_loops.py). Scores are fp32 model outputs and the
metrics are sums or ratios of a few of them: 1e-5 relative is a few hundred ulps, far below any variant gap.
"""

from __future__ import annotations

import contextlib
from functools import partial

import numpy as np
import pytest
import torch

from camrt.runtime.evaluate import Evaluator, MethodSpec, parse_methods
from camrt.runtime.metrics import (
    average_drop,
    causal_curves,
    drop_in_confidence,
    explanation_scores,
    increase_in_confidence,
    rise_variant,
    torchcam_variant,
    win_multiway,
    win_pairwise,
)
from camrt.runtime.metrics.causal import blur, gaussian_kernel_1d, saliency_ranks

import reference_loops as ref
from tiny import Tiny, images

RTOL = 1e-5


def _seed() -> int:
    return int(np.random.SeedSequence().entropy % 2**32)


@pytest.fixture
def model_and_explainer(tiny_bundle_factory):
    model = Tiny(seed=5).eval()
    return model, tiny_bundle_factory(model)


def _maps(n: int, seed: int, size: int = 32) -> np.ndarray:
    """Saliency-like maps in [0, 1] with distinct values (no ties, so every ranking rule agrees)."""
    rng = np.random.default_rng(seed)
    maps = rng.random((n, size, size)).astype(np.float32)
    return maps / maps.max(axis=(1, 2), keepdims=True)


class _StubExtractor:
    """What torchcam's metrics call on a CAM extractor, returning maps we give it (at input size: resizing them
    to the same size is an exact identity), so both sides measure the very same maps."""

    def __init__(self, model: torch.nn.Module, maps: np.ndarray) -> None:
        self.model, self.maps = model, torch.from_numpy(maps)

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps.clone()]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


# ---------------------------------------------------------------------------------------------- confidence
@pytest.mark.parametrize("score", ["prob", "logit"])
def test_average_drop_and_increase_match_torchcam(model_and_explainer, score):
    from torchcam.metrics import ClassificationMetric

    model, explainer = model_and_explainer
    seed = _seed()
    x, maps = images(6, seed), _maps(6, seed + 1)
    logits_fn = partial(torch.softmax, dim=-1) if score == "prob" else None
    metric = ClassificationMetric(_StubExtractor(model, maps), logits_fn)
    metric.update(torch.from_numpy(x))
    theirs = metric.summary()

    clean = np.asarray(explainer.runner.logits(x))
    classes = clean.argmax(1)
    o_logit, o_prob = explanation_scores(explainer.runner, x, maps[None], classes, batch_size=4)[None]
    y = (torch.softmax(torch.from_numpy(clean), -1).numpy() if score == "prob" else clean)[np.arange(6), classes]
    o = (o_prob if score == "prob" else o_logit)[0]
    ours_drop = np.nanmean(average_drop(y, o, eps=1e-7)) / 100  # torchcam: a fraction, Y + 1e-7
    if score == "logit" and (y + 1e-7 <= 0).any():
        pytest.skip("a negative clean logit: torchcam's ratio has no meaning there, camrt reports n/a")
    np.testing.assert_allclose(ours_drop, theirs["avg_drop"], rtol=RTOL, atol=1e-7)
    assert np.mean(increase_in_confidence(y, o)) / 100 == theirs["conf_increase"]


@pytest.mark.parametrize("target_kind", ["softmax", "logit"])
def test_confidence_metrics_match_pytorch_grad_cam(model_and_explainer, target_kind):
    from pytorch_grad_cam.metrics.cam_mult_image import (
        CamMultImageConfidenceChange,
        DropInConfidence,
        IncreaseInConfidence,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    model, explainer = model_and_explainer
    seed = _seed()
    x, maps = images(5, seed), _maps(5, seed + 1)
    classes = np.random.default_rng(seed).integers(0, 10, 5)  # any class, not only the predicted one
    target = ClassifierOutputSoftmaxTarget if target_kind == "softmax" else ClassifierOutputTarget
    targets = [target(int(c)) for c in classes]
    args = (torch.from_numpy(x), maps, targets, model)
    change, drop, increase = (m()(*args) for m in (CamMultImageConfidenceChange, DropInConfidence,
                                                   IncreaseInConfidence))

    o_logit, o_prob = explanation_scores(explainer.runner, x, maps[None], classes, batch_size=3)[None]
    clean = np.asarray(explainer.runner.logits(x))
    probs = torch.softmax(torch.from_numpy(clean), -1).numpy()
    y = (probs if target_kind == "softmax" else clean)[np.arange(5), classes]
    o = (o_prob if target_kind == "softmax" else o_logit)[0]
    scale = max(1.0, float(np.abs(y).max()))
    np.testing.assert_allclose(o - y, change, rtol=RTOL, atol=RTOL * scale)
    np.testing.assert_allclose(drop_in_confidence(y, o), drop, rtol=RTOL, atol=RTOL * scale)
    np.testing.assert_array_equal(increase_in_confidence(y, o) / 100, increase)


def test_top_fraction_keeps_only_the_most_salient_pixels(model_and_explainer):
    from camrt.runtime.metrics.confidence import explanation_map, top_mask

    maps = _maps(1, _seed())[0]
    mask = top_mask(maps, 0.5)
    assert mask.sum() == maps.size // 2
    assert maps[mask].min() > maps[~mask].max()
    x = images(1, 3)[0]
    e = explanation_map(x, maps, keep=0.5)
    np.testing.assert_array_equal(e[:, ~mask], 0)
    np.testing.assert_allclose(e[:, mask], (x * maps)[:, mask])


def test_average_drop_is_nan_where_the_clean_score_is_not_positive():
    drop = average_drop(np.array([2.0, -1.0, 0.0]), np.array([1.0, -3.0, -1.0]))
    assert drop[0] == 50.0 and np.isnan(drop[1:]).all()


# ---------------------------------------------------------------------------------------------- win %
def test_win_multiway_gives_ties_to_the_first_method_and_sums_to_100():
    o = np.array([[0.5, 0.2, 0.9, 0.4], [0.5, 0.3, 0.1, 0.4], [0.1, 0.3, 0.1, 0.6]])
    # image 0: methods 0 and 1 tie -> 0; image 1: 1 and 2 tie -> 1; image 2 -> 0; image 3 -> 2
    np.testing.assert_allclose(win_multiway(o), [50.0, 25.0, 25.0])
    rng = np.random.default_rng(_seed())
    assert win_multiway(rng.random((4, 50))).sum() == pytest.approx(100.0)


def test_win_pairwise_counts_strict_wins():
    o = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 4.0]])
    table = win_pairwise(o)
    np.testing.assert_allclose(table, [[0.0, 100 / 3], [100 / 3, 0.0]])


# ---------------------------------------------------------------------------------------------- deletion / insertion
def test_blur_is_rises_gaussian_substrate():
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    np.testing.assert_allclose(np.outer(gaussian_kernel_1d(), gaussian_kernel_1d()), gaussian_filter(delta, 5),
                               atol=1e-15)
    x = images(2, _seed())
    np.testing.assert_allclose(blur(x), ref.rise_blur(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_saliency_ranks_most_salient_first_ties_in_pixel_order():
    ranks = saliency_ranks(np.array([[0.2, 0.9], [0.2, 0.5]]))
    np.testing.assert_array_equal(ranks, [2, 0, 3, 1])


@pytest.mark.parametrize("step", [37, 100])
def test_deletion_insertion_match_rise_causal_metric(model_and_explainer, step):
    model, explainer = model_and_explainer
    seed = _seed()
    x, maps = images(3, seed), _maps(3, seed + 1)
    clean = np.asarray(explainer.runner.logits(x))
    ours = causal_curves(explainer.runner, x, np.stack([maps, maps[::-1]]), clean, rise_variant(step),
                         batch_size=16)
    prob_model = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()
    for b in range(3):
        for mi, sal in enumerate((maps[b], maps[::-1][b])):
            for curve, mode in (("deletion", "del"), ("insertion", "ins")):
                theirs = ref.rise_causal_metric(prob_model, torch.from_numpy(x[b:b + 1]).clone(), sal, mode, step)
                np.testing.assert_allclose(getattr(ours, curve)[mi, b], theirs, rtol=RTOL, atol=1e-7)
                assert getattr(ours, f"{curve}_auc")[mi, b] == pytest.approx(ref.rise_auc(theirs), rel=RTOL)


def test_deletion_insertion_match_torchcam(model_and_explainer):
    from torchcam.metrics import DeletionInsertionMetric

    model, explainer = model_and_explainer
    seed = _seed()
    x, maps = images(4, seed), _maps(4, seed + 1)
    metric = DeletionInsertionMetric(_StubExtractor(model, maps), partial(torch.softmax, dim=-1), batch_size=9)
    metric.update(torch.from_numpy(x))
    theirs = metric.summary()
    clean = np.asarray(explainer.runner.logits(x))
    ours = causal_curves(explainer.runner, x, maps[None], clean, torchcam_variant(), batch_size=7)
    assert ours.deletion.shape == (1, 4, 21)  # 1024 pixels: step 52, 20 intervals
    np.testing.assert_allclose(ours.deletion_auc.mean(), theirs["deletion_auc"], rtol=RTOL)
    np.testing.assert_allclose(ours.insertion_auc.mean(), theirs["insertion_auc"], rtol=RTOL)


class _CountingRunner:
    """Wraps a runner; records the size of every batch."""

    def __init__(self, runner) -> None:
        self.inner, self.batches, self.name = runner, [], "counting"

    def features(self, images):
        return self.inner.features(images)

    def head(self, activations):
        return self.inner.head(activations)

    def logits(self, images):
        self.batches.append(images.shape[0])
        return self.inner.logits(images)


def test_curves_share_the_passes_that_cannot_differ_and_stay_within_the_batch(model_and_explainer):
    _, explainer = model_and_explainer
    runner = _CountingRunner(explainer.runner)
    x, maps = images(2, _seed()), _maps(2, 7)
    clean = np.asarray(explainer.runner.logits(x))
    result = causal_curves(runner, x, np.stack([maps, maps]), clean, rise_variant(100), batch_size=8)
    n = 11  # ceil(1024 / 100) steps: 12 points, 10 interior
    expected = 1 + 2 + 2 * 2 * 2 * (n - 1)  # zero image once, blur per image, interior points per map and curve
    assert result.passes == sum(runner.batches) == expected
    assert max(runner.batches) <= 8
    np.testing.assert_array_equal(result.deletion[..., -1], result.deletion[0, 0, -1])  # the zero image
    np.testing.assert_array_equal(result.insertion[0, :, 0], result.insertion[1, :, 0])  # blur: per image


# ---------------------------------------------------------------------------------------------- the evaluator
class _CleanCounter(_CountingRunner):
    """Counts the clean passes (features on the images); masked inputs go through logits."""

    def __init__(self, runner) -> None:
        super().__init__(runner)
        self.clean = 0

    def features(self, images):
        self.clean += 1
        return self.inner.features(images)


def test_evaluator_records_every_method_metric_and_variant(model_and_explainer):
    from camrt.runtime.explainer import Explainer

    _, shared = model_and_explainer
    counter = _CleanCounter(shared.runner)
    explainer = Explainer(shared.bundle, backend=counter)
    evaluator = Evaluator(explainer, causal=("rise", "torchcam"), batch_size=32)
    specs = parse_methods("scorecam,scorecam:torchcam,scorecam++")
    x = images(2, _seed())
    result = evaluator.evaluate(x, specs)
    assert counter.clean == 1  # one clean pass for the three methods
    np.testing.assert_array_equal(result.explanations[2].saliency,
                                  shared.explain(x, "scorecam++", batch_size=32).saliency)
    records = result.records()
    assert len(records) == 2
    entry = records[0]["methods"]["scorecam:torchcam"]
    assert {k[2:] for k in entry if k.startswith("o_")} == {"prob-full", "prob-top50", "logit-full"}
    assert {k[len("deletion_auc_"):] for k in entry if k.startswith("deletion_auc_")} == {"rise", "torchcam"}
    assert len(entry["curves"]["deletion_rise"]) == 29 and len(entry["curves"]["deletion_torchcam"]) == 21
    # the confidence scores are those of the maps the explainer gives
    o_logit, o_prob = explanation_scores(explainer.runner, x, result.saliency, result.targets)[None]
    np.testing.assert_allclose(result.confidence["prob-full"][2], o_prob, rtol=RTOL)
    assert result.passes["confidence"] == 2 * 3 * 2  # (full, top 50 %) x methods x images
    assert result.passes["zero image"] == 1
    again = evaluator.evaluate(x[:1], specs)
    assert "zero image" not in again.passes  # the all-zero image is scored once per Evaluator
    np.testing.assert_allclose(again.causal["rise"].deletion_auc, result.causal["rise"].deletion_auc[:, :1])


class _ZeroCounter(_CountingRunner):
    """Counts the passes of the all-zero image (a batch of one image, every value 0)."""

    def __init__(self, runner) -> None:
        super().__init__(runner)
        self.zero = 0

    def logits(self, images):
        self.zero += images.shape[0] == 1 and not images.any()
        return super().logits(images)


def test_the_zero_image_is_scored_once_per_run_across_both_families(model_and_explainer):
    """One metric cache per Evaluator: both families over two evaluate() calls score the all-zero image once, and
    every metric pass the evaluations report went through the cache's runner."""
    _, explainer = model_and_explainer
    evaluator = Evaluator(explainer, ("prob-full", "logit-top50"), ("rise", "torchcam"), batch_size=16)
    counter = _ZeroCounter(explainer.runner)
    evaluator.metrics.cache.runner = counter
    specs = parse_methods("scorecam,scorecam++")
    first, second = (evaluator.evaluate(images(n, _seed()), specs) for n in (2, 3))
    assert counter.zero == 1
    assert first.passes["zero image"] == 1 and "zero image" not in second.passes
    assert first.passes["blurred image"] == 2 and second.passes["blurred image"] == 3  # rise only; per image
    assert sum(first.passes.values()) + sum(second.passes.values()) == sum(counter.batches)


def test_parse_methods_scopes_options_and_rejects_mistakes():
    specs = parse_methods("scorecam, iscam:torchcam ,sscam", {"num_samples": 3, "sscam.std": 1.0})
    assert [s.label for s in specs] == ["scorecam", "iscam:torchcam[num_samples=3]",
                                        "sscam[num_samples=3,std=1.0]"]
    assert specs[0] == MethodSpec("scorecam")
    from camrt.errors import InputError

    for text, options, needle in [
        ("gradcam", {}, "unknown method 'gradcam'"),
        ("scorecam:nope", {}, "no convention 'nope'"),
        ("scorecam", {"num_samples": 3}, "no method in --methods takes it"),
        ("scorecam,scorecam", {}, "listed twice"),
        ("", {}, "at least one method"),
        ("iscam", {"foo.num_samples": 2}, "unknown method 'foo'"),
    ]:
        with pytest.raises(InputError, match=needle):
            parse_methods(text, options)


def test_explain_rejects_a_clean_pass_of_other_images(model_and_explainer):
    from camrt.errors import InputError

    _, explainer = model_and_explainer
    clean = explainer.clean_pass(images(2, 1))
    with pytest.raises(InputError, match=r"clean: expected \(activations, logits\) of shapes"):
        explainer.explain(images(3, 1), clean=clean)
