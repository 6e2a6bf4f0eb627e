#!/usr/bin/env bash
# mypy over the installed layout: camrt/ (with camrt/cli/) plus exporter/, runtime/, kernels/ as camrt.exporter, ... (symlinks).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/camrt"
for f in "$root"/camrt/*.py "$root/camrt/py.typed" "$root/camrt/cli"; do ln -s "$f" "$stage/camrt/"; done
for d in exporter runtime kernels; do ln -s "$root/$d" "$stage/camrt/$d"; done
cd "$stage"
MYPYPATH="$stage" "${MYPY:-$root/.venv/bin/mypy}" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p camrt
