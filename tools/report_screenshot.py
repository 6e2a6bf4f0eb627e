"""Screenshot a run's report.html in headless chromium (tests/browser.py): how docs/report.png is made.

Run: ``PYTHONPATH=.:tests python tools/report_screenshot.py demo-out/evaluate/report.html docs/report.png``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from browser import open_browser  # tests/browser.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--sort", default="m0", help="the gallery column to sort by first (default: m0)")
    parser.add_argument("--colors", type=int, default=256, help="palette colours of the PNG (0: full colour)")
    args = parser.parse_args()
    with open_browser(args.width, args.height) as browser:
        browser.page.goto(args.page.resolve().as_uri())
        browser.page.wait_for_load_state("load")
        if args.sort:
            browser.page.click(f"#head th[data-sort={args.sort}]")
        browser.page.evaluate("document.getElementById('summary').scrollIntoView()")
        browser.screenshot(str(args.out), full_page=False)
        if browser.errors:
            raise SystemExit(f"the page logged errors: {browser.errors}")
    if args.colors:  # a palette PNG: a third of the size, for the repository
        from PIL import Image

        with Image.open(args.out) as shot:
            palette = shot.convert("RGB").quantize(args.colors, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        palette.save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
