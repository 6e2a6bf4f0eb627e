#!/usr/bin/env bash
# mypy over the TensorRT backend against tensorrt-stubs. Those stubs install as tensorrt/*.pyi without py.typed
# (and declare a dependency on tensorrt itself, so install them with: pip install --no-deps tensorrt-stubs), which
# mypy does not read from site-packages; this script stages them on MYPYPATH beside the camrt layout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -f "$site/tensorrt/__init__.pyi" ]; then
    echo "typecheck_tensorrt: tensorrt-stubs not installed (pip install --no-deps tensorrt-stubs); skipped"
    exit 0
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/camrt" "$stage/stubs"
for f in "$root"/camrt/*.py "$root/camrt/py.typed"; do ln -s "$f" "$stage/camrt/"; done
for d in exporter runtime kernels; do ln -s "$root/$d" "$stage/camrt/$d"; done
for pkg in tensorrt tensorrt_bindings; do
    mkdir -p "$stage/stubs/$pkg"
    cp "$site/$pkg"/*.pyi "$stage/stubs/$pkg/"
done
# the generated stubs name some plugin parameters ``in``, a keyword: rename them so the file parses,
# and give add_scale_nd's last parameter the default its earlier ones have
sed -i -E -e 's/([(,] ?)in: /\1in_: /g' -e 's/power: Weights = None, channel_axis: int\)/power: Weights = None, channel_axis: int = ...)/' \
    "$stage/stubs/tensorrt_bindings/tensorrt.pyi"
# the stubs themselves do not pass mypy (generated, with ``bool`` shadowed and more): check only our use of them
cat > "$stage/mypy.ini" <<'INI'
[mypy]
python_version = 3.10
ignore_missing_imports = True
[mypy-tensorrt_bindings.*]
ignore_errors = True
[mypy-tensorrt.*]
ignore_errors = True
INI
cd "$stage"
MYPYPATH="$stage:$stage/stubs" "${MYPY:-$root/.venv/bin/mypy}" --config-file "$stage/mypy.ini" \
    --cache-dir "$root/.mypy_cache/tensorrt" -m camrt.runtime.backends.tensorrt -m camrt.runtime.backends.tensorrt_build
