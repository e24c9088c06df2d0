"""The ``lowrank`` command line: ``lowrank demo`` runs the main job on built-in data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from ._demo import SECTIONS

    p = argparse.ArgumentParser(prog="lowrank", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run every capability on built-in data, beside the peers")
    demo.add_argument(
        "--sections",
        nargs="+",
        choices=list(SECTIONS),
        default=list(SECTIONS),
        help="which sections to run (default: all)",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("lowrank-demo"),
        help="folder for plots (written when matplotlib is installed)",
    )
    demo.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lowrank`` console script.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status.
    """
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from ._demo import run_demo

    return run_demo(args.sections, out=args.out, quick=args.quick)
