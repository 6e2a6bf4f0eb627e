"""Run code in a fresh interpreter where some packages cannot be imported: how the tests prove the runtime never
needs torch (and the GPU modules import without CuPy or TensorRT)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_without(body: str, blocked: tuple[str, ...] = ("torch", "torchvision"), timeout: int = 180) -> None:
    """Run ``body`` (Python source) with every import of ``blocked`` packages failing; assert it exits 0 and none of
    them got imported."""
    guard = textwrap.dedent(f"""
        import builtins, sys
        _real_import = builtins.__import__
        _BLOCKED = {tuple(blocked)!r}
        def _guarded(name, *args, **kwargs):
            if name.split(".")[0] in _BLOCKED:
                raise ImportError(name + " is blocked in this test")
            return _real_import(name, *args, **kwargs)
        builtins.__import__ = _guarded
    """)
    check = "\nassert not [m for m in sys.modules if m.split('.')[0] in _BLOCKED], 'a blocked package got imported'\n"
    script = guard + textwrap.dedent(body) + check + "print('ok')\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1:] == ["ok"], result.stdout
