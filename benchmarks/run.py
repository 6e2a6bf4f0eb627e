"""Runs the cases: one subprocess per implementation (benchmarks.worker), then ratios and map differences.

Every figure that compares implementations is a ratio taken in the same run on the same machine: the machine
is shared and noisy, so absolute seconds move between runs while the ratios much less.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import CACHE, MEMORY_REFERENCE, MODELS, ModelSpec, bundle_path, images, targets, torchcam_noise
from benchmarks.suite import Case, Preset, Row, rows_for
from benchmarks.worker import machine

ROOT = Path(__file__).resolve().parent.parent
MEMORY_MARGIN_MB = 100.0  # a fixed margin; K masked inputs at once would be 2048 x 0.6 MB = 1.2 GB at K = 2048
Log = Callable[[str], None]


def usable_backends(bundle: Path) -> tuple[list[str], dict[str, str]]:
    """camrt's backends that load this bundle and run one image here; the others with the reason they were skipped.

    GPU backends (names with cuda / tensorrt / gpu) are skipped without a visible GPU, so that a silent CPU
    fallback is never reported as a GPU number.
    """
    import camrt.runtime.backends as backends
    from camrt.runtime.bundle import Bundle

    loaded = Bundle.load(bundle)
    usable, skipped = [], {}
    for name in backends.BACKENDS:
        if any(word in name for word in ("cuda", "tensorrt", "trt", "gpu")) and not _gpu_present():
            skipped[name] = "no GPU on this machine"
            continue
        try:
            trust = {"trust_pickles": True} if name == "torch" else {}  # the benchmark's own export
            runner = backends.make_runner(name, loaded, **trust)
            runner.logits(np.zeros((1, *loaded.manifest.input_shape), np.float32))
            usable.append(name)
        except Exception as exc:  # any failure means: not usable here
            skipped[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return usable, skipped


def _gpu_present() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


class Runner:
    """Runs jobs in subprocesses, remembering results so that an identical job (the memory check's) runs once."""

    def __init__(self, cache: Path, threads: int, engine_batches: int, log: Log) -> None:
        self.cache, self.threads, self.engine_batches, self.log = cache, threads, engine_batches, log
        self.done: dict[str, tuple[dict, dict[str, np.ndarray]]] = {}
        self.calibration: dict[str, dict] = {}  # 'model engine' -> how its bundle got that INT8 graph (calibrate)

    def job(self, spec: ModelSpec, case: Case, row: Row, batch_size: int | None = None) -> dict:
        bundle = bundle_path(spec, self.cache)
        imgs = images(bundle, case.images, self.cache)
        manifest = json.loads((bundle / "manifest.json").read_text())
        job = {"impl": row.impl, "backend": row.backend, "precision": row.precision, "convention": row.convention,
               "method": case.method,
               "save_passes": row.save_passes, "samples": case.samples, "repeats": _repeats(case, row), "seed": 0,
               "batch_size": batch_size or (spec.batch_size if row.impl == "camrt" else _peer_batch(row.impl)),
               "bundle": str(bundle), "images": str(imgs), "targets": targets(bundle, imgs),
               "spec": asdict(spec), "layer": manifest["target_layer"], "channels": manifest["activation_shape"][0],
               "threads": self.threads, "engine_batches": self.engine_batches, "noise_file": None}
        if row.impl == "camrt" and case.method == "sscam" and row.convention == "torchcam":
            job["noise_file"] = str(torchcam_noise(bundle, imgs, case.samples or 35, job["seed"]))
        return job

    def run(self, job: dict) -> tuple[dict, dict[str, np.ndarray]]:
        key = json.dumps(job, sort_keys=True)
        if key in self.done:
            return self.done[key]
        out = Path(tempfile.mkdtemp(prefix="job-", dir=self.cache))
        try:
            (out / "job.json").write_text(json.dumps({**job, "out": str(out)}))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
            proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", str(out / "job.json")], cwd=ROOT,
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                result: dict = {"error": f"exit {proc.returncode}: {tail}"}
                maps: dict[str, np.ndarray] = {}
            else:
                result = json.loads((out / "result.json").read_text())
                maps = {p.stem: np.load(p) for p in out.glob("*.npy")}
        finally:
            shutil.rmtree(out, ignore_errors=True)
        self.done[key] = (result, maps)
        return result, maps


def calibrate(bundle: Path, engine: str, cache: Path, log: Log) -> dict:
    """Give ``bundle`` its calibrated INT8 graph for ``engine`` (``camrt calibrate`` on the six photos) unless it
    has one; what was done, for the results. A failure is recorded, and the INT8 rows then fail with the runner's
    own reason."""
    from camrt.runtime.bundle import Bundle
    from examples.photos import photo_paths

    if (Bundle.load(bundle, verify_hashes=False).manifest.int8 or {}).get(engine):
        return {"status": "already calibrated"}
    photos = photo_paths(cache / "photos")[0].parent
    command = [sys.executable, "-m", "camrt", "calibrate", str(bundle), str(photos), "--engine", engine]
    log(f"  calibrating {bundle.name} for INT8 on {engine} with {photos} ...")
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    out = {"command": " ".join(["camrt", *command[3:]]), "seconds": time.perf_counter() - started,
           "status": "calibrated" if proc.returncode == 0 else "failed"}
    if proc.returncode != 0:
        out["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        log(f"    calibration failed: {out['error']}")
    return out


def _repeats(case: Case, row: Row) -> int:
    """The case's repeats; its extra_repeats for the rows that are not like for like with a peer."""
    extra = row.impl == "camrt" and (row.save_passes or row.backend != "onnxruntime")
    return case.extra_repeats if extra and case.extra_repeats is not None else case.repeats


def _peer_batch(impl: str) -> int:
    from benchmarks.suite import PEER_BATCH

    return PEER_BATCH[impl]


def run_case(runner: Runner, spec: ModelSpec, case: Case, backends: list[str]) -> list[dict]:
    """All rows of one case: timings, passes, efficiency, peak RSS, ratios and map differences."""
    rows = rows_for(case, backends)
    jobs = [runner.job(spec, case, row) for row in rows]
    for engine in dict.fromkeys(row.backend for row in rows if row.precision == "int8"):
        runner.calibration.setdefault(f"{case.model} {engine}",
                                      calibrate(bundle_path(spec, runner.cache), engine, runner.cache, runner.log))
    merged: list[tuple[dict, dict[str, np.ndarray]]] = [({}, {}) for _ in rows]
    for round_ in range(max(job["repeats"] for job in jobs)):  # round-robin: drift in load hits every row alike
        for i, (row, job) in enumerate(zip(rows, jobs)):
            if round_ >= job["repeats"] or "error" in merged[i][0]:
                continue
            runner.log(f"  {case.model} {case.method} {case.mode} x{case.images}: {row.label} "
                       f"(run {round_ + 1} of {job['repeats']}) ...")
            started = time.perf_counter()
            result, maps = runner.run({**job, "repeats": 1, "round": round_, "measure_engine": round_ == 0})
            runner.log(f"    {_brief(result)} ({time.perf_counter() - started:.0f} s wall)")
            merged[i] = (_merge(merged[i][0], result), maps if round_ == 0 else merged[i][1])
    results = [(row, job, result, maps) for row, job, (result, maps) in zip(rows, jobs, merged)]
    return [_summarise(case, spec, row, job, result, maps, results) for row, job, result, maps in results]


def _merge(first: dict, later: dict) -> dict:
    """One row's result over its rounds: every run's seconds, the highest peak RSS, the first round's engine time."""
    if not first or "error" in later:
        return later if not first else {**first, **({"error": later["error"]} if "error" in later else {})}
    return {**first, "seconds": first["seconds"] + later["seconds"],
            "rss_peak_mb": max(first["rss_peak_mb"], later["rss_peak_mb"])}


def _brief(result: dict) -> str:
    if "error" in result:
        return result["error"]
    return f"{statistics.median(result['seconds']):.2f} s, {result['passes_run']} passes, " \
           f"{result['rss_peak_mb']:.0f} MB peak"


def _summarise(case: Case, spec: ModelSpec, row: Row, job: dict, result: dict, maps: dict[str, np.ndarray],
               results: list) -> dict:
    out: dict[str, Any] = {"model": case.model, "layer": job["layer"], "channels": job["channels"],
                           "method": case.method, "mode": case.mode, "images": case.images, "samples": case.samples,
                           "repeats": job["repeats"], "implementation": row.label, "impl": row.impl,
                           "backend": row.backend, "precision": row.precision, "convention": row.convention,
                           "save_passes": row.save_passes,
                           "batch_size": job["batch_size"], "random_weights": spec.random_weights, **result}
    if "error" in result:
        return out
    median = statistics.median(result["seconds"])
    out["seconds_median"] = median
    out["seconds_per_image"] = median / case.images
    out["images_per_second"] = case.images / median
    out["spread"] = [min(result["seconds"]), max(result["seconds"])]
    out["engine_efficiency"] = engine_efficiency(out)
    base = _base(row.convention, results)
    if base is not None:
        out["vs_camrt"] = median / statistics.median(base[2]["seconds"])
    reference = _reference(row, results)
    if reference is not None:
        name, theirs = reference
        key = "native" if row.convention == "torchcam" else "saliency"
        if key in maps and key in theirs and maps[key].shape == theirs[key].shape:
            out["max_abs_diff"] = float(np.abs(maps[key] - theirs[key]).max())
            out["diff_vs"] = name
            out["maps_from"] = result.get("maps_from")
    return out


def engine_efficiency(row: dict) -> float:
    """The bare engine's seconds for the row's passes / the explanation's seconds, both from the first run.

    The engine is timed in the first run's process right after the explanation, so the two share the machine's
    load at that moment; dividing by the median of later runs would not.
    """
    return float(row["engine"]["seconds"] / row["seconds"][0])


def _base(convention: str, results: list) -> tuple | None:
    """camrt on ONNX Runtime, every pass run, in ``convention``: what every row's ratio divides by."""
    for row, job, result, maps in results:
        if row.impl == "camrt" and row.backend == "onnxruntime" and row.precision == "fp32" and not row.save_passes \
                and row.convention == convention and "error" not in result:
            return row, job, result, maps
    return None


def _reference(row: Row, results: list) -> tuple[str, dict[str, np.ndarray]] | None:
    """The implementation the row's convention names (a peer), or for camrt's own rows without one, camrt's base."""
    if row.impl != "camrt":
        base = _base(row.convention, results)
        return ("camrt onnxruntime", base[3]) if base else None
    for other, _, result, maps in results:
        if other.impl != "camrt" and other.convention == row.convention and "error" not in result:
            return other.label, maps
    base = _base(row.convention, results)
    if base is None or base[0] == row:
        return None
    return "camrt onnxruntime, every pass", base[3]


def memory_check(runner: Runner, preset: Preset, log: Log) -> dict:
    """Peak RSS of camrt Score-CAM on resnet50 layer4 (K = 2048) against layer2 (K = 512), same batch and image.

    The same network either way, so the weights, the engine and every pass's input are the same; only K (and the
    split point) change. The K = 2048 job is the latency row's job, reused when the run already had it.
    """
    case = Case("resnet50", "scorecam", saved=False, other_backends=False)
    large, small = MODELS["resnet50"], MEMORY_REFERENCE
    impls = [Row("camrt", "pytorch-grad-cam")]
    if preset.memory_check_peer:
        impls.append(Row("grad-cam", "pytorch-grad-cam", backend="torch"))
    out: dict[str, Any] = {"margin_mb": MEMORY_MARGIN_MB, "batch_size": large.batch_size, "rows": []}
    for row in impls:
        peaks = {}
        for spec in (large, small):
            log(f"  memory check: {row.label}, resnet50 {spec.layer} ...")
            job = runner.job(spec, case, row, batch_size=large.batch_size if row.impl == "camrt" else None)
            result, _ = runner.run({**job, "round": 0, "measure_engine": True})
            peaks[spec.layer] = result.get("rss_peak_mb", float("nan"))
        growth = peaks["layer4"] - peaks["layer2"]
        out["rows"].append({"implementation": row.label, "peak_rss_mb_k2048": peaks["layer4"],
                            "peak_rss_mb_k512": peaks["layer2"], "growth_mb": growth,
                            "within_margin": bool(growth <= MEMORY_MARGIN_MB)})
    out["passed"] = out["rows"][0]["within_margin"]
    return out


def run_bench(preset: Preset, cases: list[Case], models: dict[str, ModelSpec] | None = None,
              cache: Path = CACHE, threads: int | None = None, log: Log = print,
              memory: bool | None = None, done: list[dict] | None = None,
              checkpoint: Callable[[dict], None] | None = None) -> dict:
    """Run ``cases`` (and the memory check if asked) and return the results as a JSON-ready dict.

    ``done``: rows of an earlier, interrupted run; their cases are kept and not run again. ``checkpoint`` is
    called with the partial result after every case, so that an interrupted run keeps what it measured.
    """
    models = models or MODELS
    threads = threads or os.cpu_count() or 2
    cache.mkdir(parents=True, exist_ok=True)
    runner = Runner(cache, threads, preset.engine_batches, log)
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(threads), "preset": preset.description, "rows": [],
                              "backends": {}}
    kept = {_case_key(r) for r in done or []}
    for case in cases:
        if (case.model, case.method, case.mode, case.images) in kept:
            result["rows"] += [r for r in done or [] if _case_key(r) == (case.model, case.method, case.mode,
                                                                        case.images)]
            continue
        spec = models[case.model]
        bundle = bundle_path(spec, cache)
        if case.model not in result["backends"]:
            usable, skipped = usable_backends(bundle)
            result["backends"][case.model] = {"usable": usable, "skipped": skipped}
        log(f"{case.model} {case.method} ({case.mode}, {case.images} image(s), {case.repeats} repeat(s))")
        result["rows"] += run_case(runner, spec, case, result["backends"][case.model]["usable"])
        if runner.calibration:
            result["calibration"] = runner.calibration
        if checkpoint is not None:
            checkpoint({**result, "partial": True, "summary": summary(result["rows"]),
                        "seconds_total": time.perf_counter() - started})
    if memory if memory is not None else preset.memory_check:
        result["memory_check"] = memory_check(runner, preset, log)
    result["summary"] = summary(result["rows"])
    result["seconds_total"] = time.perf_counter() - started
    return result


def _case_key(row: dict) -> tuple:
    return row["model"], row["method"], row["mode"], row["images"]


def summary(rows: list[dict]) -> dict:
    """The targets: camrt's engine efficiency, and its speed-up over the faster peer with every pass run."""
    cases: dict[tuple, list[dict]] = {}
    for row in rows:
        if "error" not in row:
            cases.setdefault((row["model"], row["method"], row["mode"], row["images"]), []).append(row)
    speedups, efficiency = [], []
    for (model, method, mode, n), group in cases.items():
        peers = [r for r in group if r["impl"] != "camrt" and "vs_camrt" in r]
        if peers:
            fastest = min(peers, key=lambda r: r["vs_camrt"])
            speedups.append({"model": model, "method": method, "mode": mode, "images": n,
                             "faster_peer": fastest["implementation"], "speedup": fastest["vs_camrt"]})
        for r in group:
            if r["impl"] == "camrt" and r["backend"] == "onnxruntime" and not r["save_passes"]:
                efficiency.append(r["engine_efficiency"])
    return {"speedup_vs_faster_peer_every_pass": speedups,
            "camrt_onnxruntime_efficiency": {"min": min(efficiency, default=float("nan")),
                                             "median": statistics.median(efficiency) if efficiency else float("nan")},
            "engines_vs_peers": engines_vs_peers(cases)}


def engines_vs_peers(cases: dict[tuple, list[dict]]) -> list[dict]:
    """Per case, camrt on each engine configuration (every pass run) against each peer, in the same run: the peer's
    seconds / camrt's (issue 13's targets: OpenVINO BF16 >= 5x grad-cam, INT8 >= 10x on resnet18 Score-CAM), and
    the explanation's seconds over the bare engine's for the same passes (target <= 1.1)."""
    out = []
    for (model, method, mode, n), group in cases.items():
        peers = [r for r in group if r["impl"] != "camrt"]
        for r in group:
            if r["impl"] != "camrt" or r["save_passes"]:
                continue
            out.append({"model": model, "method": method, "mode": mode, "images": n, "backend": r["backend"],
                        "precision": r.get("precision", "fp32"), "implementation": r["implementation"],
                        "seconds_per_image": r["seconds_per_image"],
                        "speedup": {p["implementation"]: p["seconds_median"] / r["seconds_median"] for p in peers},
                        "explain_over_engine": 1.0 / r["engine_efficiency"]})
    return out

