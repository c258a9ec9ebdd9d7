"""GAN-inversion: generators, Defense-GAN / Invert-and-Classify projection and latent-space attacks.

``ATTACKS``, ``DEFENSES`` and ``MODELS`` list what the native plugin registers from here.
"""

ATTACKS: tuple = ()
DEFENSES: tuple = ()
MODELS: tuple = ()
