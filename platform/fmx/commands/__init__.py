"""Sub-command modules of the `fmx` command."""
