"""`python -m ftk ...` is `ftk ...` (where no console script was installed, e.g. `pip install --target`)."""

from ftk.cli.main import main

main()
