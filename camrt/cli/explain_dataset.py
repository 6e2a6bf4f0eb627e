"""``camrt explain-dataset BUNDLE DATA``: explain every image of a dataset into float16 .npz shards and an index.

Streaming (images decoded ahead in threads, masked inputs batched across images), resumable (--resume after a
crash or Ctrl-C redoes nothing committed), bad images listed in the index and skipped; --engine ray runs the
same pipeline on Ray Data.
"""

from __future__ import annotations

import argparse
from typing import Any

from camrt.cli.args import (
    add_command,
    add_metric_arguments,
    add_shared_arguments,
    backend_options,
    count,
    make_explainer,
    metric_variants,
    parse_options,
    positive_int,
    resolve_target,
    warn_random_weights,
)

NAME = "explain-dataset"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``explain-dataset`` to the CLI's subparsers."""
    p = add_command(subparsers, NAME, parents, "explain a whole dataset into .npz shards and an index, resumably",
                    __doc__)
    p.add_argument("data", metavar="DATA",
                   help="a folder tree (subfolders: ImageFolder labels), a CSV of path[,label], or a glob")
    add_shared_arguments(p, "shards and index.csv", resume="continue the run in --out: skip every committed image",
                         batch="masked inputs per forward pass, across images")
    p.add_argument("--shard-size", type=positive_int, default=256, metavar="N", help="maps per shard (default: 256)")
    p.add_argument("--workers", type=count, default=2, metavar="N",
                   help="decode threads ahead of the engine (0: decode inline; default: 2)")
    add_metric_arguments(p, optional=True)
    p.add_argument("--report", action="store_true",
                   help="write report.html at the end: every map over its original photo, sortable by metric")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default), or Ray Data (pip install 'camrt[ray]')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --engine ray: a cluster (auto, ray://...); default: a local Ray")
    p.add_argument("--actors", type=positive_int, default=None, metavar="N",
                   help="with --engine ray: explainer actors (default: one per GPU, else 1; at most what the "
                        "cluster's nodes hold)")
    p.add_argument("--stall-timeout", type=positive_int, default=300, metavar="S",
                   help="with --engine ray: warn on stderr, naming Ray's pending demands, when no image finishes "
                        "for S seconds (default: 300)")


def run(args: argparse.Namespace) -> int:
    """Explain DATA into --out; 2 when the index lists bad images, else 0."""
    from camrt.runtime.bundle import Bundle
    from camrt.runtime.explain_dataset import explain_dataset
    from camrt.runtime.shards import read_index

    confidence, causal = metric_variants(args)
    ray_options: dict[str, Any] = {"address": args.ray_address, "stall_seconds": args.stall_timeout}
    if args.actors:
        ray_options["actors"] = args.actors
    if args.engine == "local":
        bundle: Any = make_explainer(args)  # one-line errors for a missing GPU, driver or package
        target = resolve_target(args.target, bundle.bundle)
    else:
        bundle = args.bundle
        loaded = Bundle.load(args.bundle)
        warn_random_weights(loaded)
        target = resolve_target(args.target, loaded)
    result = explain_dataset(
        bundle, args.data, args.out, args.method, args.convention, options=parse_options(args.option, args.method),
        target=target, batch_size=args.batch_size, shard_size=args.shard_size, seed=args.seed,
        confidence=confidence, causal=causal, step=args.step, background=args.background, resume=args.resume,
        allow_new=args.allow_new,
        workers=args.workers,
        limit=args.limit, engine=args.engine, backend=args.backend, backend_options=backend_options(args),
        ray_options=ray_options, progress=not args.quiet, report=args.report,
    )
    rows = read_index(args.out)
    bad = sum(row["status"] != "ok" for row in rows)
    print(f"{result.explained} explained, {result.failed} bad in this run ({result.images_per_second:.3g} images/s); "
          f"{len(rows) - bad} of {result.total} done in all, {bad} bad; index: {args.out / 'index.csv'}")
    if args.report:
        print(f"report: {args.out / 'report.html'}")
    return 2 if bad else 0
