"""The command line: argument parsing, the commands (audit, compare, rules), terminal progress.

Nothing in the package imports cli; heavy libraries load inside the commands so `--help` is instant."""
