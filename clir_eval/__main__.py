"""``python -m clir_eval``: the same command line as ``clir-eval``."""

from clir_eval.cli import main

if __name__ == "__main__":
    main()
