"""The ``lowrank`` command line: ``lowrank demo`` runs the main job on built-in data."""

from __future__ import annotations

import argparse
import sys
import tempfile
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


def _check_out_folder(out: Path) -> None:
    """Raise OSError unless ``out`` is, or could be created as, a writable folder.

    Checked before any demo section runs, so a bad ``--out`` costs nothing. Writing a probe
    file (not ``os.access``) also catches read-only file systems and holds for root; nothing
    is left behind and no folder is created.
    """  # numpydoc ignore=PR01
    if out.exists() and not out.is_dir():
        msg = "exists and is not a folder"
        raise NotADirectoryError(msg)
    existing = out
    while not existing.exists():  # the nearest existing ancestor is where mkdir would start
        existing = existing.parent
    if not existing.is_dir():
        msg = f"{existing} is not a folder"
        raise NotADirectoryError(msg)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        msg = f"no file can be created in {existing} ({exc.strerror or exc})"
        raise PermissionError(msg) from exc


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
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out.resolve()
    try:
        _check_out_folder(out)
    except OSError as exc:
        reason = str(exc) if exc.strerror is None else exc.strerror
        parser.error(f"--out: cannot write plots to {out}: {reason}")  # exits with status 2
    from ._demo import run_demo

    return run_demo(args.sections, out=args.out, quick=args.quick)
