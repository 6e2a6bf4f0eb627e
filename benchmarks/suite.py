"""What a benchmark run measures: cases (model x method x mode), the rows each case gets, and the presets.

A case is one model, one method, one mode (latency: one image; throughput: several) and its repeats. Each case
becomes rows, one per implementation: camrt on ONNX Runtime with every pass run, once per convention a peer
names (the like-for-like rows), camrt with pass saving on, camrt on every other usable backend, camrt on the
case's engine configurations (backend and precision, e.g. OpenVINO BF16 and INT8), and grad-cam / torchcam
where they have the method.
"""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("scorecam", "iscam", "sscam", "scorecam++")
MODES = ("latency", "throughput")
# the conventions camrt is timed in: one per peer that has the method (the first is the case's main row)
CONVENTIONS = {"scorecam": ("pytorch-grad-cam", "torchcam"), "iscam": ("torchcam",), "sscam": ("torchcam",),
               "scorecam++": ("paper",)}
PEERS = {"scorecam": ("grad-cam", "torchcam"), "iscam": ("torchcam",), "sscam": ("torchcam",), "scorecam++": ()}
PEER_CONVENTION = {"grad-cam": "pytorch-grad-cam", "torchcam": "torchcam"}
PEER_BATCH = {"grad-cam": 16, "torchcam": 32}  # their defaults
PEER_LABEL = {"grad-cam": "grad-cam 1.5.7", "torchcam": "torchcam 0.5.0"}
SAMPLED = ("iscam", "sscam")  # N x K passes per image
# the CPU engine configurations timed beside the peers (issue 13), every pass run: ONNX Runtime's calibrated INT8
# and OpenVINO at each precision
ENGINES = (("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))


@dataclass(frozen=True)
class Case:
    """One model, method and mode, and what to run for it."""

    model: str
    method: str
    mode: str = "latency"
    images: int = 1
    repeats: int = 1
    extra_repeats: int | None = None  # repeats of the pass-saving and other-backend rows (None: ``repeats``)
    samples: int | None = None  # IS-CAM / SS-CAM samples (None: the method's default, 10 / 35)
    saved: bool = True  # also time camrt with pass saving on
    other_backends: bool = True  # also time camrt on the backends other than ONNX Runtime
    peers: bool = True
    engines: tuple[tuple[str, str], ...] = ()  # (backend, precision) rows, every pass, where the backend is usable


@dataclass(frozen=True)
class Row:
    """One implementation of a case."""

    impl: str  # camrt, grad-cam, torchcam
    convention: str
    backend: str = "onnxruntime"  # camrt's backend; "torch" (eager) for the peers
    save_passes: bool = False
    precision: str = "fp32"  # camrt's engine precision

    @property
    def label(self) -> str:
        if self.impl != "camrt":
            return f"{PEER_LABEL[self.impl]} (batch {PEER_BATCH[self.impl]})"
        passes = "passes saved" if self.save_passes else "every pass"
        precision = "" if self.precision == "fp32" else f" {self.precision}"
        return f"camrt {self.backend}{precision}, {self.convention}, {passes}"


def rows_for(case: Case, backends: list[str]) -> list[Row]:
    """The rows of a case: like-for-like camrt rows first, then pass saving, other backends, the peers."""
    conventions = CONVENTIONS[case.method]
    rows = [Row("camrt", c) for c in conventions]
    if case.saved:
        rows.append(Row("camrt", conventions[0], save_passes=True))
    if case.other_backends:
        rows += [Row("camrt", conventions[0], backend=b) for b in backends if b != "onnxruntime"]
    for backend, precision in case.engines:
        row = Row("camrt", conventions[0], backend=backend, precision=precision)
        if backend in backends and row not in rows:
            rows.append(row)
    if case.peers:
        rows += [Row(p, PEER_CONVENTION[p], backend="torch") for p in PEERS[case.method]]
    return rows


@dataclass(frozen=True)
class Preset:
    """A named set of cases, and whether to run the memory check."""

    description: str
    cases: tuple[Case, ...]
    memory_check: bool = False
    memory_check_peer: bool = False  # also run grad-cam at the K = 512 layer, to show what not-flat looks like
    engine_batches: int = 2
    defaults: dict = field(default_factory=dict)


def _full() -> tuple[Case, ...]:
    r18 = [Case("resnet18", "scorecam", repeats=3, extra_repeats=1, engines=ENGINES),
           Case("resnet18", "iscam", samples=2), Case("resnet18", "sscam", samples=2),
           Case("resnet18", "scorecam++")]
    lite = [Case("efficientnet_lite0", "scorecam", other_backends=False, engines=ENGINES),
            Case("efficientnet_lite0", "scorecam++", other_backends=False)]
    big = [Case(m, "scorecam", saved=False, other_backends=False, engines=ENGINES if m == "resnet50" else ())
           for m in ("resnet50", "vgg16")]
    throughput = [Case("resnet18", "scorecam", mode="throughput", images=3, saved=False, other_backends=False)]
    return (*r18, *lite, *big, *throughput)


def _quick() -> tuple[Case, ...]:
    return (Case("resnet18", "scorecam"), Case("resnet18", "iscam", samples=2), Case("resnet18", "sscam", samples=2),
            Case("efficientnet_lite0", "scorecam++", other_backends=False),
            Case("efficientnet_lite0", "scorecam", mode="throughput", images=2, other_backends=False,
                 peers=False))


def _engines() -> tuple[Case, ...]:
    return tuple(Case(m, "scorecam", saved=False, other_backends=False, engines=ENGINES)
                 for m in ("resnet18", "resnet50", "efficientnet_lite0"))


PRESETS = {
    "quick": Preset("resnet18: Score-CAM, IS-CAM and SS-CAM (2 samples); EfficientNet-Lite0: ScoreCAM++, camrt-only "
                    "throughput on 2 photos; one repeat (~5 min on 2 cores)", _quick()),
    "full": Preset("all four models and methods: resnet18 every method (Score-CAM median of 3, IS-CAM / SS-CAM 2 "
                   "samples), EfficientNet-Lite0 Score-CAM and ScoreCAM++, resnet50 and vgg16 Score-CAM (one "
                   "repeat), resnet18 throughput on 3 images, and the memory check (~40 min on 2 cores)", _full(),
                   memory_check=True, memory_check_peer=True),
    "engines": Preset("Score-CAM on resnet18, resnet50 and EfficientNet-Lite0, every pass run: camrt on ONNX Runtime "
                      "FP32 / INT8 and on OpenVINO FP32 / BF16 / INT8 (INT8 calibrated first) beside grad-cam and "
                      "torchcam, one repeat (~25 min on 2 cores)", _engines()),
}


def select(preset: Preset, models: list[str] | None = None, methods: list[str] | None = None,
           modes: list[str] | None = None, repeats: int | None = None, samples: int | None = None) -> list[Case]:
    """The preset's cases filtered by model, method and mode, with repeats / samples overridden where given.

    A model or method asked for that the preset does not have gets a latency case of its own.
    """
    cases = list(preset.cases)
    if models:
        known = {c.model for c in cases}
        cases = [c for c in cases if c.model in models]
        for model in (m for m in models if m not in known):
            cases += [Case(model, method) for method in (methods or METHODS)]
    if methods:
        present = {(c.model, c.method) for c in cases}
        cases = [c for c in cases if c.method in methods]
        for model in dict.fromkeys(c.model for c in preset.cases if not models or c.model in models):
            cases += [Case(model, m, samples=2 if m in SAMPLED else None) for m in methods
                      if (model, m) not in present and not any(c.model == model and c.method == m for c in cases)]
    if modes:
        cases = [c for c in cases if c.mode in modes]
    if repeats is not None:
        cases = [_replace(c, repeats=repeats, extra_repeats=None) for c in cases]
    if samples is not None:
        cases = [_replace(c, samples=samples) if c.method in SAMPLED else c for c in cases]
    return cases


def _replace(case: Case, **changes: object) -> Case:
    from dataclasses import replace

    return replace(case, **changes)
