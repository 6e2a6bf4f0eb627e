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
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/cpu_<preset>.json); "
                        "rewritten after every case, so an interrupted run keeps what it measured")
    parser.add_argument("--resume", action="store_true", help="keep the cases already in --out, run the rest")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    cases = select(preset, args.models, args.methods, None if args.mode == "both" else [args.mode], args.repeats,
                   args.samples)
    memory = preset.memory_check and not args.no_memory_check and (not args.models or "resnet50" in args.models)
    out = args.out or Path("benchmarks/results") / f"cpu_{args.preset}.json"
    command = " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])])
    done = json.loads(out.read_text())["rows"] if args.resume and out.is_file() else None
    result = run_bench(preset, cases, memory=memory, threads=args.threads, done=done,
                       log=lambda line: print(line, file=sys.stderr, flush=True),
                       checkpoint=lambda partial: _write(out, {**partial, "command": command}))
    result["command"] = command
    print(markdown(result))
    _write(out, result)
    print(f"\nwrote {out} ({result['seconds_total'] / 60:.1f} min)")


def _write(out: Path, result: dict) -> None:
    """Write the JSON atomically (a .tmp beside it, then a rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)


if __name__ == "__main__":
    main()
