"""The `ftk` command line (entry point: `ftk.cli.main:main`). This package is the only place that
imports Typer, and nothing outside it imports it. One module per pipeline stage registers that
stage's commands on the app in `app.py`; each command parses, calls one function, prints."""
