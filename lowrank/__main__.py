"""``python -m lowrank``: same as the ``lowrank`` console script."""

from ._cli import main

raise SystemExit(main())
