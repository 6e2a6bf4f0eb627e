#!/usr/bin/env bash
# One call on a GPU machine checks the whole GPU path, in under 8 minutes on one GPU:
#   1. the GPU tests (tests/test_gpu.py, then tests/test_gpu_static.py), each test's outcome and seed kept;
#   2. benchmarks/bench_gpu.py: native TensorRT, FP32 and FP16, resnet18 and resnet50 (kernel against the fill
#      ceiling, explain against the engine alone, grad-cam with TF32 off and on), then torch on resnet18;
#   3. a summary with the issue's GPU targets (kernel >= 70 % of the fill ceiling, explain <= 1.15x the engine
#      alone, >= 30x grad-cam at FP32) checked per row.
# Writes JSON into OUT (default benchmarks/results/): gpu_tests.json, gpu_scorecam_<backend>.json, gpu_check.json
# (the summary), and the logs beside them. Each step has its own time limit (220 + 190 + 50 s by default;
# GPU_CHECK_TESTS_S, GPU_CHECK_TENSORRT_S, GPU_CHECK_TORCH_S change them), so a hang costs only its step, and
# bench_gpu rewrites its JSON after every row, so a step cut short keeps the rows it finished.
#     tools/gpu_check.sh [OUT]        PYTHON=... to choose the interpreter (default .venv/bin/python)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$root/benchmarks/results}" && cd "${1:-$root/benchmarks/results}" && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=$(command -v python3)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)
step() {  # step NAME SECONDS CMD...: run CMD under a time limit, log to OUT/NAME.log, record its status
    local name=$1 limit=$2
    shift 2
    echo "gpu_check: $name (limit ${limit}s)"
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name $rc $(( $(date +%s) - started ))" >>"$out/.steps"
    tail -3 "$out/$name.log"
    return 0
}
rm -f "$out/.steps"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/gpu_env.log" 2>&1 || true

step gpu_tests "${GPU_CHECK_TESTS_S:-220}" "$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_gpu_static.py \
    --junitxml="$out/gpu_tests.xml" -o junit_family=xunit1 -rs
step bench_tensorrt "${GPU_CHECK_TENSORRT_S:-190}" "$python" -m benchmarks.bench_gpu --backend tensorrt --precisions fp32,fp16 \
    --models resnet18,resnet50 --batches 64,256 --repeats 5 --out "$out"
step bench_torch "${GPU_CHECK_TORCH_S:-50}" "$python" -m benchmarks.bench_gpu --backend torch --precisions fp32,fp16 --models resnet18 \
    --batches 64 --repeats 3 --skip-gradcam --out "$out"

"$python" - "$out" <<'PY'
"""Summarise: the tests (outcome and seed each) from the JUnit XML, the bench rows against the targets."""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
steps = {}
for line in (out / ".steps").read_text().splitlines():
    name, rc, at = line.split()
    steps[name] = {"exit": int(rc), "timed_out": rc in ("124", "137"), "seconds_since_start": int(at)}
tests = []
if (out / "gpu_tests.xml").is_file():
    for case in ET.parse(out / "gpu_tests.xml").iter("testcase"):
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = (found.get("message") or "").splitlines()[:1]
        seed = next((p.get("value") for p in case.iter("property") if p.get("name") == "seed"), None)
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "seed": seed,
                      **({"message": message[0] if message else ""} if outcome != "passed" else {})})
(out / "gpu_tests.json").write_text(json.dumps(tests, indent=1) + "\n")
counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
targets = []
for path in sorted(out.glob("gpu_scorecam_*.json")):
    report = json.loads(path.read_text())
    for row in report.get("rows", []):
        check = {"file": path.name, **{k: row.get(k) for k in ("model", "backend", "precision", "batch")},
                 "kernel_of_fill": row.get("kernel_of_fill"), "explain_over_engine": row.get("explain_over_engine"),
                 "speedup_vs_gradcam_fp32": row.get("speedup_vs_gradcam_fp32")}
        check["kernel_ok"] = (row.get("kernel_of_fill") or 0) >= 0.70
        check["explain_ok"] = (row.get("explain_over_engine") or 99) <= 1.15
        if "speedup_vs_gradcam_fp32" in row:
            check["gradcam_ok"] = row["speedup_vs_gradcam_fp32"] >= 30
        targets.append(check)
summary = {"steps": steps, "tests": counts, "targets": targets,
           "gpu": (out / "gpu_env.log").read_text().strip() if (out / "gpu_env.log").is_file() else None}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({"steps": steps, "tests": counts}, indent=1))
bad = counts["failed"] + counts["error"] or any(s["exit"] not in (0, 5) for s in steps.values())
sys.exit(1 if bad else 0)
PY
status=$?
rm -f "$out/.steps"
echo "gpu_check: $(( $(date +%s) - started ))s; results in $out (gpu_check.json)"
exit $status
