"""``python -m camrt``: the same command line as the ``camrt`` console script."""

from camrt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
