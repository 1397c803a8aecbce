"""``python -m webhookd``: the same as the ``webhookd`` command."""

from webhookd.cli import main

raise SystemExit(main())
