"""``camrt report RUN_DIR``: (re)build report.html of an evaluate or explain-dataset run folder, finished or not.

The page shows what the folder holds now (a run that was interrupted, or is still running, shows the images done so
far). An explain-dataset run keeps its maps, so overlays missing from report/ are drawn again from its shards; an
evaluate run keeps none (it draws them as each image finishes), so a missing one is shown as missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "report"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``report`` to the CLI's subparsers."""
    p = subparsers.add_parser(NAME, parents=parents, help="(re)build report.html of an evaluate or explain-dataset "
                              "run folder", description=__doc__.splitlines()[0].split(": ", 1)[-1].replace("``", ""))
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the --out folder of camrt evaluate or "
                   "explain-dataset")


def run(args: argparse.Namespace) -> int:
    """Write RUN_DIR/report.html (and the overlays it can draw again); print its path."""
    from camrt.errors import InputError
    from camrt.runtime.report_page import build_report

    if not args.run_dir.is_dir():
        raise InputError(f"RUN_DIR: {args.run_dir} is not a folder")
    print(f"report: {build_report(args.run_dir)}")
    return 0
