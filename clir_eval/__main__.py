"""``python -m clir_eval``: the ``clir-eval`` command (also what ``torchrun -m clir_eval`` starts)."""

from clir_eval.cli import main

if __name__ == "__main__":
    main()
