"""`python -m emprops`: the CLI (emprops/cli.py); loads neither Django nor Celery."""

import sys

from emprops.cli import main

if __name__ == "__main__":
    sys.exit(main())
