"""shieldkit's native attacks, one algorithm per file.

``ATTACKS`` is the one place that lists them; the native plugin registers each.
"""

from shieldkit.attacks.apgd import APGD
from shieldkit.attacks.apgd_targeted import APGDTargeted
from shieldkit.attacks.deepfool import DeepFool
from shieldkit.attacks.fgsm import FGSM
from shieldkit.attacks.fmn import FMN
from shieldkit.attacks.hue_saturation import HueSaturation
from shieldkit.attacks.noise import Noise
from shieldkit.attacks.pgd import PGD
from shieldkit.attacks.semantic import Semantic
from shieldkit.attacks.square import Square

ATTACKS = (FGSM, Noise, Semantic, HueSaturation, PGD, DeepFool, APGD, APGDTargeted, FMN, Square)

__all__ = ["APGD", "ATTACKS", "FGSM", "FMN", "APGDTargeted", "DeepFool", "HueSaturation", "Noise", "PGD",
           "Semantic", "Square"]
