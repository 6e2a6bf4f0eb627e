"""``python -m benchmarks``: camrt against grad-cam 1.5.7 and torchcam 0.5.0, side by side, one command.

Prints a Markdown table and writes the JSON (default benchmarks/results/cpu_<preset>.json). See
benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks.report import markdown
from benchmarks.run import run_bench
from benchmarks.suite import METHODS, MODES, PRESETS, select

os.environ.setdefault("TQDM_DISABLE", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full",
                        help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    parser.add_argument("--models", nargs="+", help="only these models (resnet18 resnet50 vgg16 efficientnet_lite0)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="only these methods")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--repeats", type=int, help="repeats per implementation (default: the preset's)")
    parser.add_argument("--samples", type=int, help="IS-CAM / SS-CAM samples (default: the preset's, 2)")
    parser.add_argument("--no-memory-check", action="store_true", help="skip the K = 2048 vs K = 512 memory check")
    parser.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/cpu_<preset>.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    cases = select(preset, args.models, args.methods, None if args.mode == "both" else [args.mode], args.repeats,
                   args.samples)
    memory = preset.memory_check and not args.no_memory_check and (not args.models or "resnet50" in args.models)
    result = run_bench(preset, cases, memory=memory, threads=args.threads,
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    result["command"] = " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])])
    text = markdown(result)
    print(text)
    out = args.out or Path("benchmarks/results") / f"cpu_{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"\nwrote {out} ({result['seconds_total'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
