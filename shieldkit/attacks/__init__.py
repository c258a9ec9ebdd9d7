"""shieldkit's native attacks, one algorithm per file.

``ATTACKS`` is the one place that lists them; the native plugin registers each.
"""

from shieldkit.attacks.fgsm import FGSM

ATTACKS = (FGSM,)

__all__ = ["ATTACKS", "FGSM"]
