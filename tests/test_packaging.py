"""The wheel installs one namespace, camrt; never top-level runtime/kernels/exporter modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_only_the_camrt_namespace(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("camrt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("camrt-")}
    assert tops == {"camrt"}
    packages = [init.parent.relative_to(ROOT) for top in ("exporter", "runtime", "kernels", "camrt")
                for init in (ROOT / top).rglob("__init__.py")]
    assert len(packages) >= 12
    for package in packages:  # every source package ships, under camrt/ (the top-level camrt folder is camrt itself)
        parts = package.parts[1:] if package.parts[0] == "camrt" else package.parts
        assert "/".join(("camrt", *parts, "__init__.py")) in names, package


def test_runtime_does_not_import_torch_at_module_level():
    """The runtime never needs torch: no runtime/kernels module imports it at module level (static check; the
    subprocess test in test_runtime.py is the dynamic one)."""
    offenders = []
    for path in list((ROOT / "runtime").rglob("*.py")) + list((ROOT / "kernels").rglob("*.py")):
        for line in path.read_text().splitlines():
            if line.startswith(("import torch", "from torch")):
                offenders.append(f"{path.relative_to(ROOT)}: {line}")
    assert not offenders
