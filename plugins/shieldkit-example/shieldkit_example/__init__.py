"""shieldkit-example: a third-party plugin, found by its entry point in the group ``shieldkit``.

It adds what the core does not have: a salt-and-pepper noise attack
(``salt_pepper.example``) and a Gaussian-blur input transform
(``gaussian_blur.example``). ``pip install`` is all it takes for them to appear.
"""

import shieldkit as sk
from shieldkit_example.gaussian_blur import GaussianBlur
from shieldkit_example.salt_pepper import SaltPepper

__all__ = ["GaussianBlur", "SaltPepper", "register_attacks", "register_defenses"]


@sk.hookimpl
def register_attacks(register):
    register(SaltPepper)


@sk.hookimpl
def register_defenses(register):
    register(GaussianBlur)
