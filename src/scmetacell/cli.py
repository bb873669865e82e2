"""Command line: ``scmetacell demo`` (and ``scmetacell run`` once the model lands)."""

from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scmetacell", description="Metacells for single-cell data.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run metacells end to end on the bundled PBMC 3k data")
    d.add_argument("--out", default="scmetacell_demo", help="output folder (default: ./scmetacell_demo)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scmetacell`` command."""
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from . import tl

        if not hasattr(tl, "metacell"):
            print("scmetacell demo: tl.metacell is not implemented yet; nothing was run.", file=sys.stderr)
            return 2
        from ._demo import run_demo

        return run_demo(args.out)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
