"""``python -m poise`` runs the CLI."""

import sys

from poise.cli import main

sys.exit(main())
