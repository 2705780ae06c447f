"""`python -m ignite_cifar`: the command line (cli.py)."""

import sys

from ignite_cifar.cli import main

if __name__ == "__main__":
    sys.exit(main())
