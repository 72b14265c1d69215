"""``python -m numpylm``: the same as the ``numpylm`` command."""

from .cli import main

raise SystemExit(main())
