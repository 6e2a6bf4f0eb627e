"""``camrt explain-dataset BUNDLE DATA``: explain every image of a dataset into float16 .npz shards and an index.

Streaming (images decoded ahead in threads, masked inputs batched across images), resumable (--resume after a
crash or Ctrl-C redoes nothing committed), bad images listed in the index and skipped; --engine ray runs the
same pipeline on Ray Data.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from camrt.errors import InputError
from camrt.runtime.metrics.confidence import DEFAULT_VARIANTS


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``explain-dataset`` on the CLI's subparsers."""
    from camrt.cli import _positive_int, add_backend_arguments
    from camrt.runtime.methods import METHODS

    p = sub.add_parser(
        "explain-dataset", parents=parents, help="explain a whole dataset into .npz shards and an index, resumably",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    p.add_argument("bundle", metavar="BUNDLE", type=Path, help="a bundle folder (from camrt export)")
    p.add_argument("data", metavar="DATA",
                   help="a folder tree (subfolders: ImageFolder labels), a CSV of path[,label], or a glob")
    p.add_argument("--method", "-m", choices=list(METHODS), default="scorecam", help="default: scorecam")
    p.add_argument("--convention", "-c", default="paper", help="whose implementation to match exactly (default: paper)")
    p.add_argument("--out", "-o", required=True, type=Path, help="the folder to write shards and index.csv to")
    p.add_argument("--target", "-t", default="predicted", metavar="predicted|label|CLASS",
                   help="the class to explain: predicted (default), the data's label, or one class index or name")
    p.add_argument("--resume", action="store_true", help="continue the run in --out: skip every committed image")
    p.add_argument("--shard-size", type=_positive_int, default=256, metavar="N", help="maps per shard (default: 256)")
    p.add_argument("--workers", type=_count, default=2, metavar="N",
                   help="decode threads ahead of the engine (0: decode inline; default: 2)")
    p.add_argument("--metrics", action="store_true",
                   help="also score each map (Average Drop, Increase in Confidence, deletion/insertion AUC)")
    p.add_argument("--confidence", default=None, metavar="VARIANTS",
                   help=f"with --metrics: confidence variants (default: {','.join(DEFAULT_VARIANTS)}; none)")
    p.add_argument("--causal", default=None, metavar="VARIANTS",
                   help="with --metrics: deletion/insertion variants, rise or torchcam (default: rise; none)")
    p.add_argument("--step", type=_positive_int, default=None, metavar="PIXELS", help="RISE pixels per step")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default), or Ray Data (pip install 'camrt[ray]')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --engine ray: a cluster (auto, ray://...); default: a local Ray")
    p.add_argument("--actors", type=_positive_int, default=None, metavar="N",
                   help="with --engine ray: explainer actors (default: one per GPU, else 1)")
    add_backend_arguments(p)
    p.add_argument("--batch-size", "-b", type=_positive_int, default=64, metavar="N",
                   help="masked inputs per forward pass, across images (default: 64)")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. num_samples=10 (repeatable)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="noise seed for sscam (default: 0)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="only the first N images")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


def _metric_variants(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(confidence, causal) variant names: none unless --metrics (or a variant list) asks for them."""
    if not (args.metrics or args.confidence or args.causal):
        return (), ()

    def names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        chosen = default if text is None else tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
        return () if chosen == ("none",) else chosen

    return names(args.confidence, tuple(DEFAULT_VARIANTS)), names(args.causal, ("rise",))


def _target(value: str, args: argparse.Namespace) -> str | int:
    if value in ("predicted", "label"):
        return value
    from camrt.cli import _resolve_target
    from camrt.runtime.bundle import Bundle

    index = _resolve_target(value, Bundle.load(args.bundle))
    if index is None:
        raise InputError(f"--target: expected predicted, label or a class, got {value!r}")
    return index


def run(args: argparse.Namespace) -> int:
    """Explain DATA into --out; 2 when the index lists bad images, else 0."""
    from camrt.cli import _backend_options, _parse_options, make_explainer
    from camrt.runtime.explain_dataset import explain_dataset
    from camrt.runtime.shards import read_index

    confidence, causal = _metric_variants(args)
    ray_options: dict[str, Any] = {"address": args.ray_address}
    if args.actors:
        ray_options["actors"] = args.actors
    if args.engine == "local":
        bundle: Any = make_explainer(args)  # one-line errors for a missing GPU, driver or package
    else:
        bundle = args.bundle
    result = explain_dataset(
        bundle, args.data, args.out, args.method, args.convention, options=_parse_options(args.option),
        target=_target(args.target, args), batch_size=args.batch_size, shard_size=args.shard_size, seed=args.seed,
        confidence=confidence, causal=causal, step=args.step, resume=args.resume, workers=args.workers,
        limit=args.limit, engine=args.engine, backend=args.backend, backend_options=_backend_options(args),
        ray_options=ray_options, progress=not args.quiet,
    )
    rows = read_index(args.out)
    bad = sum(row["status"] != "ok" for row in rows)
    print(f"{result.explained} explained, {result.failed} bad in this run ({result.images_per_second:.3g} images/s); "
          f"{len(rows) - bad} of {result.total} done in all, {bad} bad; index: {args.out / 'index.csv'}")
    return 2 if bad else 0
