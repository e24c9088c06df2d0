"""``python -m lowrank``: same as the ``lowrank`` console script."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
