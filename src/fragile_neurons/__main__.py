"""`python -m fragile_neurons`: the `fragile-neurons` command (cli.py)."""

from .cli import main

if __name__ == "__main__":
    main()
