"""The ``loupe-bench`` command line: a thin layer over the Python API."""
