"""``python -m shieldkit`` runs the command line (and works under ``torchrun -m shieldkit``)."""

import sys

from shieldkit.cli import main

sys.exit(main())
