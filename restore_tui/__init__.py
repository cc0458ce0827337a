"""The restore-tui application: the staged engine, the command line and the wizard."""

__version__ = "0.1.0"
