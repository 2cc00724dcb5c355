"""`python -m lightning_genae ...`: the command line, as `genae ...` and a clone's `python run.py ...`."""

import sys

from lightning_genae.experiment.cli import main

if __name__ == "__main__":
    sys.exit(main())
