"""``explain_dataset(engine="ray")``: the dataset pipeline on Ray Data, so a cluster explains a dataset unchanged.

Stages, streamed (memory stays bounded whatever the dataset's length):

1. read: ``ray.data.from_items`` of the rows ``{index, path, label}`` still to do;
2. decode: ``map_batches`` of a plain function (Ray tasks): ``prefetch.decode`` per row with the bundle's
   preprocessing, into columns ``index, path, label, x (n, 3, H, W) float32, error, decoding`` (a bad file: zeros
   and its one-line error);
3. explain: ``map_batches`` of a callable class (Ray actors): one ``Explainer`` and one ``DatasetWorker`` per
   actor, built once, so the sessions and the worker's caches live across batches; the masked inputs of the
   images of a Ray batch are batched across images as in the local engine. Out come the columns ``row`` (the
   index row as JSON), ``saliency`` (n, H, W) float16, ``weights`` (n, K) float32, ``has_map``, and ``fatal``
   (a camrt error met building the actor, which the driver raises again as one line). A GPU backend reserves
   one GPU per actor (``device="cuda:N"`` becomes ``cuda``: Ray shows each actor its own GPU only);
4. write: the driver iterates the result as it streams in (in the order Ray finishes it) and yields ``Record``s;
   ``explain_dataset`` writes them with the same ``ShardWriter`` as the local engine, so the output, --resume and
   atomicity are shared.

SS-CAM's noise is keyed by each image's dataset index, so Ray gives the maps the local engine gives. The actors
open the bundle at ``bundle_root`` and the decode tasks read the image paths: on a cluster both must be reachable
at the same paths on every node (a shared filesystem), and camrt installed there.

``ray_options`` (all optional):

- ``address``: None starts a local Ray (or joins the one ``RAY_ADDRESS`` names); ``"auto"`` or ``"ray://..."``
  joins a cluster. A Ray already initialised in this process is reused whatever the address, and left running.
- ``num_cpus``: CPUs of a local Ray this function starts (default: all of the machine's).
- ``object_store_memory``: bytes of object store of a local Ray this function starts (default 256 MB: the
  stream holds a few decoded batches at a time, and Ray spills beyond it).
- ``actors``: explaining actors (default: one per GPU of the cluster for a GPU backend, else 1).
- ``actor_cpus``: CPUs each actor reserves (default 1). More actors than the cluster's live nodes can place
  are refused in one line (``ray_cluster.placeable``). ONNX Runtime picks its own thread count unless
  ``backend_options`` has ``intra_op_threads``.
- ``batch_images``: images per Ray batch handed to an actor (default: ``max(8, 2 * workers)``, raised to four
  engine batches' worth of images on narrow layers, so masked inputs fill the engine's batches across images).
- ``decode_tasks``: decode tasks at a time (default: the cluster's CPUs). They reserve no CPU, only memory, so
  actors holding every CPU cannot starve them (the deadlock of issue 20).
- ``stall_seconds``: after this long with no image finished while work is pending, one warning line on stderr
  naming Ray's pending resource demands, repeated each period; the run keeps waiting (an autoscaler or a node
  joining may still bring the resources; Ctrl-C commits what is finished). Default 300.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

import camrt.errors
from camrt.errors import CamrtError
from camrt.runtime.backends import check_backend, on_gpu, visible_gpu_options
from camrt.runtime.bundle import Bundle, Preprocessing
from camrt.runtime.dataset import Item
from camrt.runtime.dataset_worker import DatasetSpec, DatasetWorker, Record
from camrt.runtime.prefetch import Decoded, decode
from camrt.runtime.preprocess import Decoding
from camrt.runtime.ray_cluster import Watchdog, placeable

RAY_OPTIONS = ("address", "num_cpus", "object_store_memory", "actors", "actor_cpus", "batch_images", "decode_tasks",
               "stall_seconds")
STALL_SECONDS = 300.0
LOCAL_OBJECT_STORE = 256 * 1024 * 1024
MAX_BLOCKS = 8192  # read blocks: one decode task's worth of rows each, up to this many
MAX_BATCH_IMAGES = 256


def run_on_ray(
    bundle_root: Path,
    spec: DatasetSpec,
    todo: list[tuple[int, Item]],
    backend: str,
    backend_options: dict[str, Any],
    workers: int,
    ray_options: dict[str, Any],
) -> Iterator[Record]:
    """One Record per (dataset index, item) of ``todo``, bad images included, in the order Ray finishes them.

    Starts a local Ray when none is initialised (and shuts it down at the end); reuses one that is.
    """
    ray = check_ray(backend, ray_options)
    if not todo:
        return
    manifest = Bundle.load(bundle_root).manifest
    gpu = on_gpu(backend, backend_options.get("device"))
    started_here = not ray.is_initialized()
    if started_here:
        _start(ray, ray_options)
    batches: Any = None
    try:
        actors = _actors(ray, ray_options, gpu)
        actor_cpus = ray_options.get("actor_cpus", 1)
        batch_images = _batch_images(ray_options, workers, spec, manifest.activation_shape[0])
        decode_tasks = ray_options.get("decode_tasks") or max(1, int(ray.cluster_resources().get("CPU", 1)))
        decode_memory = _decode_memory(batch_images, manifest.input_shape)
        blocks = min(math.ceil(len(todo) / batch_images), MAX_BLOCKS)
        ds = ray.data.from_items([{"index": i, "path": str(item.path), "label": item.label or ""}
                                  for i, item in todo], override_num_blocks=blocks)
        _quiet(ds.context)
        ds = ds.map_batches(_decode_batch, batch_size=batch_images, batch_format="numpy",
                            fn_kwargs={"pre": manifest.preprocessing, "shape": tuple(manifest.input_shape),
                                       "background": spec.background},
                            compute=ray.data.TaskPoolStrategy(size=decode_tasks), num_cpus=0, memory=decode_memory)
        ds = ds.map_batches(
            ExplainActor, batch_size=batch_images, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"bundle_root": str(bundle_root), "spec": spec, "backend": backend,
                                   "backend_options": dict(backend_options), "gpu": gpu,
                                   "map_shape": tuple(manifest.input_shape[1:]), "k": manifest.activation_shape[0]},
            num_cpus=actor_cpus, num_gpus=1 if gpu else None,
        )
        asked = (f"{actors} actor(s) of {{CPU: {actor_cpus:g}{', GPU: 1' if gpu else ''}}} and up to {decode_tasks} "
                 f"decode task(s) of {{CPU: 0, memory: {decode_memory / 2**20:.0f}MB}}")
        watchdog = Watchdog(ray, float(ray_options.get("stall_seconds") or STALL_SECONDS), asked)
        batches = iter(ds.iter_batches(batch_format="numpy", batch_size=None))
        for batch in watchdog.watch(batches):
            yield from _records(batch)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stop the streaming executor now when the consumer stops early
        if started_here:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------- the stages
def _decode_batch(batch: dict[str, np.ndarray], pre: Preprocessing, shape: tuple[int, int, int],
                  background: tuple[int, int, int]) -> dict[str, Any]:
    """Decode and preprocess a batch of rows (a Ray task): bad files give zeros and their one-line error."""
    n = len(batch["index"])
    x = np.zeros((n, *shape), np.float32)
    errors: list[str] = []
    decodings: list[str] = []  # what decoding did, as JSON (a plain column Ray can hold), "" for a bad file
    for i in range(n):
        path = Path(str(batch["path"][i]))
        item = decode(int(batch["index"][i]), path, str(batch["label"][i]) or None, pre, background=background)
        if item.x is not None:
            x[i] = item.x  # (3, crop) = the input shape: Bundle.load checks the manifest for it
        errors.append(item.error or "")
        decodings.append(json.dumps(asdict(item.decoding)) if item.decoding is not None else "")
    return {"index": np.asarray(batch["index"], np.int64), "path": np.asarray(batch["path"]),
            "label": np.asarray(batch["label"]), "x": x, "error": np.asarray(errors, dtype=object),
            "decoding": np.asarray(decodings, dtype=object)}


class ExplainActor:
    """One Ray actor's explainer: the Explainer and the DatasetWorker are built once and serve every batch.

    A camrt error while building them (a bad backend option, no GPU runtime) comes back as a ``fatal`` column:
    Ray hands the driver only the text of an actor's exceptions, so the driver raises it again as one line.
    """

    def __init__(self, bundle_root: str, spec: DatasetSpec, backend: str, backend_options: dict[str, Any],
                 gpu: bool, map_shape: tuple[int, int], k: int) -> None:
        from camrt.runtime.explainer import Explainer

        self.map_shape, self.k = map_shape, k
        self.fatal = ""
        # Ray shows the actor only its own GPU (CUDA_VISIBLE_DEVICES): cuda:N becomes cuda
        options = visible_gpu_options(backend_options) if gpu else dict(backend_options)
        try:
            explainer = Explainer(Path(bundle_root), backend=backend, **options)
            self.worker = DatasetWorker(explainer, spec)  # once: its zero-image logits serve every batch
        except CamrtError as exc:
            self.fatal = f"{type(exc).__name__}:{exc}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.fatal:
            return self._columns([], self.fatal)
        decoded = [
            Decoded(int(index), Path(str(path)), str(label) or None, None if str(error) else x, str(error) or None,
                    decoding=Decoding(**json.loads(str(decoding))) if str(decoding) else None)
            for index, path, label, x, error, decoding in zip(batch["index"], batch["path"], batch["label"],
                                                              batch["x"], batch["error"], batch["decoding"])
        ]
        return self._columns(list(self.worker.process(decoded)))

    def _columns(self, records: list[Record], fatal: str = "") -> dict[str, np.ndarray]:
        n = max(len(records), 1 if fatal else 0)
        saliency = np.zeros((n, *self.map_shape), np.float16)
        weights = np.zeros((n, self.k), np.float32)
        has_map = np.zeros(n, bool)
        rows = np.full(n, "", dtype=object)
        for j, record in enumerate(records):
            rows[j] = json.dumps(record.row, default=_plain)
            if record.saliency is not None:
                saliency[j] = record.saliency
                weights[j] = record.weights
                has_map[j] = True
        return {"row": rows, "saliency": saliency, "weights": weights, "has_map": has_map,
                "fatal": np.full(n, fatal, dtype=object)}


def _records(batch: dict[str, np.ndarray]) -> Iterator[Record]:
    """The Records of one result batch, with the row values the local engine gives (JSON keeps ints and None)."""
    for j in range(len(batch["row"])):
        if batch["fatal"][j]:
            kind, _, message = str(batch["fatal"][j]).partition(":")
            error = getattr(camrt.errors, kind, None)
            raise (error if isinstance(error, type) and issubclass(error, CamrtError) else CamrtError)(message)
        row = json.loads(str(batch["row"][j]))
        if batch["has_map"][j]:  # copies: the writer keeps maps until its shard is full; views would pin Ray's batch
            yield Record(row, np.array(batch["saliency"][j], np.float16), np.array(batch["weights"][j], np.float32))
        else:
            yield Record(row)


def _plain(value: Any) -> Any:
    """numpy scalars (and anything else JSON lacks) as plain Python values for the row's JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} in an index row")


# ---------------------------------------------------------------------------------------------- Ray itself
def check_ray(backend: str, ray_options: dict[str, Any]) -> Any:
    """The ray module, after checking ``ray_options`` and the backend: what can fail before a run folder is made
    (and before Ray starts; the actors build the runner)."""
    unknown = sorted(set(ray_options) - set(RAY_OPTIONS))
    if unknown:
        raise CamrtError(f"ray_options: unknown {', '.join(unknown)}; expected some of {', '.join(RAY_OPTIONS)}")
    check_backend(backend)
    return _import_ray()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise CamrtError("--engine ray: Ray is not installed; pip install 'camrt[ray]'") from None
    return ray


def _start(ray: Any, ray_options: dict[str, Any]) -> None:
    """Start a quiet local Ray, or join the cluster at ``address``."""
    import logging

    address = ray_options.get("address")
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        ray.init(num_cpus=ray_options.get("num_cpus"),
                 object_store_memory=int(ray_options.get("object_store_memory") or LOCAL_OBJECT_STORE), **quiet)
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)


def _decode_memory(batch_images: int, input_shape: tuple[int, int, int]) -> int:
    """Memory a decode task holds: its batch of inputs twice (built, then handed to Ray) and 256 MB for the worker
    process (about 100 MB with camrt loaded) and a large photo being decoded. Asking for it also makes the decode
    tasks' resources differ from the actors', which keeps Ray Data from fusing decode into the actors: decode then
    runs beside the engine, as the local engine's decode threads do, not before each batch on the actor."""
    return 2 * batch_images * int(np.prod(input_shape)) * 4 + 256 * 1024 * 1024


def _actors(ray: Any, ray_options: dict[str, Any], gpu: bool) -> int:
    """How many explaining actors: as asked, else one per GPU of the cluster (GPU backends) or one; refused
    when more than the cluster's live nodes can place."""
    actors = ray_options.get("actors")
    if actors is not None and (not isinstance(actors, int) or actors < 1):
        raise CamrtError(f"ray_options actors: must be a positive integer, got {actors!r}")
    actor_cpus = ray_options.get("actor_cpus", 1)
    if not isinstance(actor_cpus, (int, float)) or actor_cpus < 0:
        raise CamrtError(f"ray_options actor_cpus: must be a number >= 0, got {actor_cpus!r}")
    return placeable(ray, actors, actor_cpus, gpu, "--actors", "actor",
                     "set ray_options actors to wait for GPUs, or use a CPU backend")


def _batch_images(ray_options: dict[str, Any], workers: int, spec: DatasetSpec, channels: int) -> int:
    """Images per actor batch: enough that the masked inputs of several images fill each engine batch."""
    asked = ray_options.get("batch_images")
    if asked is not None:
        if not isinstance(asked, int) or asked < 1:
            raise CamrtError(f"ray_options batch_images: must be a positive integer, got {asked!r}")
        return asked
    per_engine_batch = math.ceil(spec.batch_size / max(channels, 1))  # images one engine batch needs at least
    return min(max(8, 2 * workers, 4 * per_engine_batch), MAX_BATCH_IMAGES)


def _quiet(context: Any) -> None:
    """No Ray Data progress bars or execution banners for this dataset (its own copy of the context)."""
    for name, value in (("enable_progress_bars", False), ("enable_operator_progress_bars", False),
                        ("print_on_execution_start", False), ("enable_auto_log_stats", False)):
        if hasattr(context, name):
            setattr(context, name, value)
