"""``explain_dataset``: explain every image of a dataset into float16 .npz shards and an index, resumably.

Images are decoded ahead in threads (``prefetch``), explained with masked inputs batched across images
(``stream``), optionally scored by the metrics, and committed a shard at a time (``shards``). A crash or Ctrl-C
loses at most the shard being collected; ``resume=True`` skips every image with a committed row. The same
pipeline runs on Ray Data with ``engine="ray"`` (``ray_engine``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camrt._version import __version__
from camrt.errors import CamrtError, InputError
from camrt.runtime.atomic import write_text
from camrt.runtime.dataset import Item, discover
from camrt.runtime.dataset_worker import DatasetSpec, DatasetWorker, Record
from camrt.runtime.explainer import Explainer
from camrt.runtime.listing import Entry, index_listing, listing_facts
from camrt.runtime.prefetch import decode_ahead
from camrt.runtime.preprocess import parse_background
from camrt.runtime.run_folder import locked, open_run, run_config, sigterm_as_interrupt
from camrt.runtime.shards import INDEX, SHARDS, ShardWriter

SUMMARY = "summary.json"
COMMAND = "explain-dataset"
ENGINES = ("local", "ray")


@dataclass
class DatasetRun:
    """What one call did: counts, time and passes of this run; the rows are in ``out``/index.csv."""

    out: Path
    total: int  # images in DATA (after limit)
    skipped_done: int  # images with a committed row before this run (--resume)
    explained: int = 0  # images explained in this run
    failed: int = 0  # bad images met in this run (listed in the index with their error)
    seconds: float = 0.0
    passes: int = 0  # masked-input passes of this run (explanations; metrics not counted)
    engine: str = "local"
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, error) of this run's bad images

    @property
    def images_per_second(self) -> float:
        return (self.explained + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {"camrt_version": __version__, "total": self.total, "skipped_done": self.skipped_done,
                "explained": self.explained, "failed": self.failed, "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 4), "passes_run": self.passes,
                "engine": self.engine, "errors": [{"path": p, "error": e} for p, e in self.errors]}


def explain_dataset(
    bundle: str | Path | Explainer,
    data: str | Path,
    out: str | Path,
    method: str = "scorecam",
    convention: str = "paper",
    *,
    options: dict[str, Any] | None = None,
    target: str | int = "predicted",
    batch_size: int = 64,
    shard_size: int = 256,
    seed: int | None = 0,
    save_passes: bool = True,
    confidence: tuple[str, ...] | list[str] = (),
    causal: tuple[str, ...] | list[str] = (),
    step: int | None = None,
    background: Any = None,
    resume: bool = False,
    allow_new: bool = False,
    workers: int = 2,
    limit: int | None = None,
    engine: str = "local",
    backend: str = "onnxruntime",
    backend_options: dict[str, Any] | None = None,
    ray_options: dict[str, Any] | None = None,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    report: bool = False,
) -> DatasetRun:
    """Explain the images of ``data`` (a folder tree, a CSV of path[,label], or a glob) into ``out``.

    target: ``predicted``, ``label`` (the folder or CSV label) or a class index. confidence / causal: metric
    variants to compute per image in the same run (see ``camrt evaluate``). engine ``ray`` runs on Ray Data.
    background: the colour transparent pixels are composited on (``preprocess.parse_background``; None: white).
    on_record is called with each image's index row as it is written (ok or error). resume continues the run in
    ``out`` (same settings, same listing of ``data``); with allow_new, images added to ``data`` get new indices.
    One writer at a time holds ``out``; SIGTERM commits the finished images as Ctrl-C does (``Terminated``).
    report: write ``out``/report.html at the end (``report_page``; ``camrt report`` rebuilds it any time).
    """
    spec = DatasetSpec(method, convention, tuple(sorted((options or {}).items())), target, batch_size, seed,
                       save_passes, tuple(confidence), tuple(causal), step, parse_background(background))
    spec.check()
    if engine not in ENGINES:
        raise InputError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise InputError(f"shard_size: must be a positive integer, got {shard_size!r}")
    explainer = bundle if isinstance(bundle, Explainer) else None
    if explainer is None and engine == "local":
        explainer = Explainer(Path(bundle), backend=backend, **(backend_options or {}))  # type: ignore[arg-type]
    bundle_root = explainer.bundle.root if explainer is not None else Path(bundle)  # type: ignore[arg-type]
    if allow_new and not resume:
        raise InputError("--allow-new: only with --resume (a new run takes every image anyway)")
    if engine == "ray":  # Ray missing, a bad ray option or backend: refused before --out is touched
        from camrt.runtime.ray_engine import check_ray

        check_ray(backend, ray_options or {})
    keyed, facts = listing_facts(data, [Item(Path(os.path.abspath(i.path)), i.label) for i in discover(data)[:limit]])
    fresh = not Path(out).exists()
    try:
        with locked(out) as folder, sigterm_as_interrupt():
            runner = explainer.runner if explainer is not None else None
            config = run_config(bundle_root, spec.config(), getattr(runner, "name", backend),
                                getattr(runner, "precision", (backend_options or {}).get("precision")))
            folder = open_run(folder, config, resume, results=(INDEX, f"{SHARDS}/shard-*"), command=COMMAND,
                              extra={**facts, **_report_facts(explainer, bundle_root)})
            entries = index_listing(folder, keyed, facts, allow_new)
            run = _run(folder, entries, spec, explainer, bundle_root, shard_size, engine, backend, backend_options,
                       workers, ray_options, progress, on_record)
            if report:
                from camrt.runtime.report_page import build_report

                build_report(folder)
            return run
    except CamrtError:
        if fresh and not any(Path(out).glob(f"{SHARDS}/shard-*")):  # a failed start leaves no run folder behind:
            shutil.rmtree(out, ignore_errors=True)  # it made the folder in this call, and nothing was explained
        raise


def _run(out: Path, entries: list[Entry], spec: DatasetSpec, explainer: Explainer | None, bundle_root: Path,
         shard_size: int, engine: str, backend: str, backend_options: dict[str, Any] | None, workers: int,
         ray_options: dict[str, Any] | None, progress: bool,
         on_record: Callable[[dict[str, Any]], None] | None) -> DatasetRun:
    """Explain the entries without a committed row into ``out`` (locked by the caller)."""
    writer = ShardWriter(out, shard_size)
    done = writer.done_keys
    keys = {index: key for index, key, _ in entries}
    todo = [(index, item) for index, key, item in entries if key not in done]
    run = DatasetRun(out, len(entries), len(entries) - len(todo), engine=engine)
    started = time.perf_counter()
    bar = _bar(len(todo), run.skipped_done, progress)
    try:
        if engine == "ray":
            from camrt.runtime.ray_engine import run_on_ray

            records: Iterator[Record] = run_on_ray(bundle_root, spec, todo, backend, backend_options or {},
                                                   workers, ray_options or {})
        else:
            worker = DatasetWorker(explainer, spec)  # type: ignore[arg-type]
            pre = worker.bundle.manifest.preprocessing
            decoded = decode_ahead(((i, item.path, item.label) for i, item in todo), pre, workers,
                                   background=spec.background)
            records = worker.process(decoded)
        for record in records:
            _count(run, record)
            writer.add({**record.row, "key": keys[int(record.row["index"])]}, record.saliency, record.weights)
            bar.update(1)
            if on_record is not None:
                on_record(record.row)
            if record.row["status"] != "ok":
                bar.write(f"camrt: warning: {record.row['error']}; skipped", file=sys.stderr)
            elif record.row.get("warning"):  # an upscaled photo: explained, and said so
                bar.write(f"camrt: warning: {record.row['warning']}", file=sys.stderr)
    finally:  # Ctrl-C or an engine error: what is finished is committed, nothing half-written stays
        bar.close()
        writer.commit()
        writer.write_index()
        run.seconds = time.perf_counter() - started
        write_text(out / SUMMARY, json.dumps(run.summary(), indent=2) + "\n")
    return run


def _report_facts(explainer: Explainer | None, bundle_root: Path) -> dict[str, Any]:
    """What the report needs to place a map on its original photo (the resize and crop), for run.json."""
    from camrt.runtime.bundle import Bundle
    from camrt.runtime.report_page import report_facts

    bundle = explainer.bundle if explainer is not None else Bundle.load(bundle_root)
    return report_facts(bundle.manifest.preprocessing)


def _count(run: DatasetRun, record: Record) -> None:
    row = record.row
    if row["status"] == "ok":
        run.explained += 1
        run.passes += int(row["passes_run"])
    else:
        run.failed += 1
        run.errors.append((row["path"], row["error"]))


def _bar(total: int, initial_done: int, enabled: bool) -> Any:
    """tqdm over this run's images: images/s and the ETA (off when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="image", file=sys.stderr, disable=None if enabled else True, dynamic_ncols=True,
                desc="explain" if not initial_done else f"explain ({initial_done} done before)", smoothing=0.1)
