"""clir-eval: cross-lingual retrieval for low-resource languages, built and judged.

Importing this package does no work: models, the JVM and heavy libraries load where used.
"""

__version__ = "0.1.0"
