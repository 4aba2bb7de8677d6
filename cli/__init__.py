"""The ``binarize`` command-line interface (installed as ``binarize.cli``)."""
