"""`python -m restore_tui` runs the `restore-tui` command."""

import sys

from restore_tui.cli import main

sys.exit(main())
