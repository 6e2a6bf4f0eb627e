"""``camrt bench BUNDLE DATA``: compare engine configurations (backend x precision) with FP32 ONNX Runtime on
your images: how close their maps are and how fast they run.

Prints a fidelity table and a speed table (Markdown) and, with --json, writes every number. Exit status 1 when
--min-correlation is given and a configuration's mean map r is below it, or a configuration asked for could not
be measured; one line per such configuration on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from camrt._version import __version__
from camrt.cli.args import (
    add_command,
    add_method_arguments,
    add_metric_arguments,
    add_run_arguments,
    add_target_argument,
    batch_size,
    image_target,
    metric_variants,
    parse_options,
    positive_int,
    progress_bar,
    resolve_target,
    warn_random_weights,
)

NAME = "bench"
GATE_FAILED = 1


def _batch_sizes(text: str) -> list[int]:
    """An argparse type: comma-separated batch sizes, each as --batch-size takes it."""
    sizes = list(dict.fromkeys(batch_size(item.strip()) for item in text.split(",") if item.strip()))
    if not sizes:
        raise argparse.ArgumentTypeError("expected batch sizes such as 1,8,64")
    return sizes


def _correlation(text: str) -> float:
    """An argparse type: a correlation in [-1, 1]."""
    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a correlation in [-1, 1], got {text!r}")
    return value


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the CLI's subparsers."""
    p = add_command(subparsers, NAME, parents, "compare backends and precisions with FP32 ONNX Runtime: fidelity and "
                    "speed", __doc__)
    p.add_argument("data", metavar="DATA",
                   help="a folder of images (subfolders: ImageFolder labels), a CSV of path,label, or a glob")
    p.add_argument("--backends", default="onnxruntime", metavar="B,...",
                   help="comma-separated backends (default: onnxruntime); the reference, FP32 onnxruntime, always runs")
    p.add_argument("--precisions", default="fp32", metavar="P,...",
                   help="comma-separated precisions, each tried on every backend (default: fp32)")
    add_method_arguments(p)
    add_target_argument(p)
    add_metric_arguments(p, optional=False)
    add_run_arguments(p, batch="masked inputs per forward pass of the explanations")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 8, 64], metavar="B,...",
                   help="batch sizes of the engine-alone timings (default: 1,8,64)")
    p.add_argument("--repeats", type=positive_int, default=3, metavar="N",
                   help="timed runs of the one-image explanation and of each engine batch (default: 3)")
    p.add_argument("--limit", type=positive_int, default=8, metavar="N", help="the first N images (default: 8)")
    p.add_argument("--min-correlation", type=_correlation, default=None, metavar="R",
                   help="exit 1 when a configuration's mean map r is below R, or it could not be measured")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write every number to OUT")
    p.add_argument("--device", default=None, metavar="DEV", help="cpu, cuda or cuda:N (default: each backend's)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="T", help="CPU threads of each backend")
    p.add_argument("--trust-bundle", action="store_true",
                   help="backend torch: load the bundle's torch.export programs, whose pickles can run code; "
                        "only for bundles you trust as you trust code")


def run(args: argparse.Namespace) -> int:
    """Bench every configuration on the first --limit images of DATA; print the tables; 1 if the gate fails."""
    from camrt.runtime.bench import suite, table
    from camrt.runtime.bench.configs import configurations
    from camrt.runtime.bundle import Bundle
    from camrt.runtime.dataset import discover
    from camrt.runtime.preprocess import load_batch

    started = time.perf_counter()
    configs = configurations(args.backends, args.precisions)
    options = parse_options(args.option, args.method)
    confidence, causal = metric_variants(args)
    bundle = Bundle.load(args.bundle)
    warn_random_weights(bundle)
    items = discover(args.data)[: args.limit]
    target = resolve_target(args.target, bundle)
    chosen = [image_target(target, i.label, bundle, i.path) for i in items]
    targets = None if target == "predicted" else [int(t) for t in chosen if t is not None]
    x = load_batch([i.path for i in items], bundle.manifest.preprocessing, args.background)
    settings = suite.Settings(args.method, args.convention, options, args.batch_size, tuple(args.batch_sizes),
                              args.repeats, args.seed, confidence, causal, args.step, args.device, args.threads,
                              args.trust_bundle)
    with progress_bar(len(configs), args.quiet) as bar:
        bar.unit = "configuration"
        current = [configs[0]]

        def stage(config: Any, what: str) -> None:
            if config is not current[0]:
                current[0] = config
                bar.update(1)
            bar.set_postfix_str(f"{config.label}: {what}", refresh=True)

        result = suite.run(bundle, x, configs, settings, targets, stage)
        bar.update(bar.total - bar.n)
    result = {"camrt_version": __version__, "bundle": str(bundle.root), "model": bundle.manifest.model_name,
              "layer": bundle.manifest.target_layer, "paths": [str(i.path) for i in items], **result,
              "seconds": round(time.perf_counter() - started, 3)}
    failed = table.gate(result, args.min_correlation) if args.min_correlation is not None else []
    result["min_correlation"] = {"threshold": args.min_correlation, "failed": failed}
    print(table.markdown(result), end="")
    if args.json is not None:
        from camrt.runtime.atomic import write_text

        write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"results: {args.json}")
    for line in failed:
        print(f"camrt: --min-correlation {args.min_correlation:g}: {line}", file=sys.stderr)
    return GATE_FAILED if failed else 0
