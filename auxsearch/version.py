"""The package version (read by ``pyproject.toml`` and ``auxsearch --version``)."""

__version__ = "0.1.0"
