"""shieldkit's native defences, one per file.

``DEFENSES`` is the one place that lists them; the native plugin registers each.
"""

DEFENSES: tuple = ()

__all__ = ["DEFENSES"]
