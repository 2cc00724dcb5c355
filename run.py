"""Train a model: `python run.py --help` lists every option (same as the `genae` command)."""

import sys

from lightning_genae.experiment.cli import main

if __name__ == "__main__":
    sys.exit(main())
