"""shieldkit's native attacks, one algorithm per file.

``ATTACKS`` is the one place that lists them; the native plugin registers each.
"""

from shieldkit.attacks.deepfool import DeepFool
from shieldkit.attacks.fgsm import FGSM
from shieldkit.attacks.hue_saturation import HueSaturation
from shieldkit.attacks.noise import Noise
from shieldkit.attacks.pgd import PGD
from shieldkit.attacks.semantic import Semantic

ATTACKS = (FGSM, Noise, Semantic, HueSaturation, PGD, DeepFool)

__all__ = ["ATTACKS", "FGSM", "DeepFool", "HueSaturation", "Noise", "PGD", "Semantic"]
