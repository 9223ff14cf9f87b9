"""check: validate all of params.yaml before any other stage runs (each depends on this one)."""

from fragile_neurons.check import main

if __name__ == "__main__":
    main()
