"""One module per `restore-tui` sub-command, each with `register(subparsers)`."""
