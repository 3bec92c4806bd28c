"""The `ssah` command line: engine commands run in-process; `serve` and `keys` drive the service."""
