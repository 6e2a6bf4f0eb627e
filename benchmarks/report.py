"""The results as Markdown: one table per mode, the targets, the memory check.

``python -m benchmarks.report results.json`` prints the tables of a results file again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

METHOD_NAMES = {"scorecam": "Score-CAM", "iscam": "IS-CAM", "sscam": "SS-CAM", "scorecam++": "ScoreCAM++"}


def markdown(result: dict[str, Any]) -> str:
    """The whole report: machine, latency and throughput tables, targets and the memory check."""
    lines = [f"Machine: {result['machine']}. Preset: {result['preset']}.", "", NOTES, ""]
    for mode, title in (("latency", "Latency: one image"), ("throughput", "Throughput: several images")):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        if rows:
            lines += [f"### {title}", "", *table(rows, throughput=mode == "throughput"), ""]
    lines += targets(result)
    if "memory_check" in result:
        lines += ["", *memory_table(result["memory_check"])]
    skipped = {f"{name} ({why})" for info in result.get("backends", {}).values() for name, why in
               info["skipped"].items()}
    if skipped:
        lines += ["", f"Backends skipped: {'; '.join(sorted(skipped))}."]
    return "\n".join(lines)


def _method(row: dict) -> str:
    """The method's name, with the number of samples where it has them (IS-CAM, SS-CAM)."""
    name = METHOD_NAMES.get(row["method"], row["method"])
    return f"{name}, {row['samples']} samples" if row.get("samples") else name


def table(rows: list[dict], throughput: bool = False) -> list[str]:
    """Markdown rows; a case's model and method are written on its first row only."""
    head = ["model (layer, K)", "method", "implementation"]
    head += ["images", "images/s"] if throughput else []
    head += ["s / image (median)", "runs, min-max s", "vs camrt", "passes run / saved", "engine eff.",
             "peak RSS MB", "max abs map diff (vs)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    last = None
    for row in rows:
        case = (row["model"], row["method"], row["images"])
        model = f"{row['model']}{'*' if row['random_weights'] else ''} ({row['layer']}, {row['channels']})"
        cells = [model, _method(row)] if case != last else ["", ""]
        last = case
        cells.append(row["implementation"])
        if "error" in row:
            out.append("| " + " | ".join(cells + [f"failed: {row['error']}"] + [""] * (len(head) - len(cells) - 1))
                       + " |")
            continue
        if throughput:
            cells += [str(row["images"]), f"{row['images_per_second']:.3f}"]
        runs = row["seconds"]
        cells += [f"{row['seconds_per_image']:.2f}",
                  f"{len(runs)}, {row['spread'][0]:.2f}-{row['spread'][1]:.2f}" if len(runs) > 1 else "1",
                  f"{row['vs_camrt']:.2f}x" if "vs_camrt" in row else "",
                  f"{row['passes_run']} / {row['passes_saved']}",
                  f"{row['engine_efficiency']:.2f}",
                  f"{row['rss_peak_mb']:.0f}",
                  _diff(row)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _diff(row: dict) -> str:
    if "max_abs_diff" not in row:
        return "-"
    noise = " (torchcam's noise)" if "torchcam's noise" in str(row.get("maps_from")) else ""
    return f"{row['max_abs_diff']:.1e} ({row['diff_vs']}){noise}"


def targets(result: dict[str, Any]) -> list[str]:
    """The speed-up over the faster peer per case, and camrt's engine efficiency."""
    summary = result["summary"]
    lines = ["### Targets", "", "| model | method | mode | faster peer | camrt speed-up, every pass run |",
             "|---|---|---|---|---|"]
    for s in summary["speedup_vs_faster_peer_every_pass"]:
        lines.append(f"| {s['model']} | {METHOD_NAMES.get(s['method'], s['method'])} | {s['mode']} "
                     f"({s['images']}) | {s['faster_peer']} | {s['speedup']:.2f}x |")
    eff = summary["camrt_onnxruntime_efficiency"]
    lines += ["", f"camrt (ONNX Runtime, every pass run) engine efficiency: min {eff['min']:.2f}, "
                  f"median {eff['median']:.2f} (target >= 0.9)."]
    return lines + engines_table(result)


def engines_table(result: dict[str, Any]) -> list[str]:
    """camrt on every engine configuration (backend, precision; every pass run) against the peers of its case, in
    the same run (issue 13: OpenVINO BF16 >= 5x grad-cam, INT8 >= 10x, explain within 1.1x of the engine)."""
    entries = result["summary"].get("engines_vs_peers", [])
    cases = {(r["model"], r["method"], r["mode"]) for r in entries if (r["backend"], r["precision"]) !=
             ("onnxruntime", "fp32")}  # the cases with another engine: all their camrt rows, ONNX Runtime's too
    rows = [r for r in entries if (r["model"], r["method"], r["mode"]) in cases]
    if not rows:
        return []
    peers = list(dict.fromkeys(p for r in rows for p in r["speedup"]))
    lines = ["", "### Engines and precisions against the peers (every pass run, same run)", "",
             "| model | method | mode | implementation | s / image | " + " | ".join(f"vs {p}" for p in peers)
             + " | explain / engine |", "|" + "---|" * (6 + len(peers))]
    for r in rows:
        ratios = [f"{r['speedup'][p]:.2f}x" if p in r["speedup"] else "-" for p in peers]
        lines.append(f"| {r['model']} | {METHOD_NAMES.get(r['method'], r['method'])} | {r['mode']} ({r['images']}) | "
                     f"{r['implementation']} | {r['seconds_per_image']:.2f} | " + " | ".join(ratios)
                     + f" | {r['explain_over_engine']:.2f} |")
    calibration = result.get("calibration", {})
    lines += [""] if calibration else []
    lines += [f"INT8 calibration, {model}: {c['status']}" + (f" ({c['command']}, {c['seconds']:.0f} s)"
              if "command" in c else "") + (f": {c['error']}" if "error" in c else "") + "."
              for model, c in calibration.items()]
    return lines


def memory_table(check: dict[str, Any]) -> list[str]:
    """Peak RSS at K = 2048 (resnet50 layer4) against K = 512 (resnet50 layer2), same batch."""
    lines = ["### Memory: resnet50 layer4 (K = 2048) against layer2 (K = 512), same network, image and batch", "",
             "| implementation | peak RSS MB, K = 2048 | peak RSS MB, K = 512 | growth MB | within "
             f"{check['margin_mb']:.0f} MB |", "|---|---|---|---|---|"]
    for row in check["rows"]:
        lines.append(f"| {row['implementation']} | {row['peak_rss_mb_k2048']:.0f} | {row['peak_rss_mb_k512']:.0f} "
                     f"| {row['growth_mb']:+.0f} | {'yes' if row['within_margin'] else 'no'} |")
    return lines


NOTES = (
    "\\* random weights (torchvision architecture, torch.manual_seed(0)); EfficientNet-Lite0 has its real "
    "pretrained weights. Inputs: real photos (skimage's chelsea first), 224 x 224. Every implementation "
    "explains the same class (camrt's ONNX Runtime argmax of the clean image). 'vs camrt' divides by camrt on "
    "ONNX Runtime with every pass run in the same convention (for a peer, the convention that names it); above "
    "1 is slower than camrt. Engine eff. = seconds for the same number of passes through the bare engine "
    "(runner.logits, or the eager model for the peers, on pre-built inputs at the same batch size) / seconds "
    "of the explanation, both from the first run (one process, back to back). Peak RSS: VmHWM of a fresh "
    "process per implementation (imports, model, engine and explanation; camrt on ONNX Runtime never imports "
    "torch). Map differences: against the implementation "
    "the convention names (torchcam at its native h x w; SS-CAM replays torchcam's own noise, as "
    "tests/test_parity.py does); rows without a peer are compared with camrt on ONNX Runtime, every pass run."
)


def main() -> None:
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
