"""`python -m fragile_neurons`: the `fragile-neurons` command (interface/cli.py)."""

from .interface.cli import main

if __name__ == "__main__":
    main()
