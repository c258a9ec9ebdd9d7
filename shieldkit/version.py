"""shieldkit's version: one place, importing nothing (pyproject.toml reads it too)."""

__version__ = "0.1.0"
