"""``python -m shieldkit.cli`` runs the command line, as ``python -m shieldkit`` does."""

import sys

from shieldkit.cli.main import main

sys.exit(main())
