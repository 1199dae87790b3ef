"""``python -m listener`` is the ``overread`` command."""

from listener.cli import main

raise SystemExit(main())
