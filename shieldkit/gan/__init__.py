"""GAN-inversion: generators, Defense-GAN / Invert-and-Classify projection and latent-space attacks.

``ATTACKS``, ``DEFENSES`` and ``MODELS`` list what the native plugin registers from here.
"""

from shieldkit.gan.bpda_pgd import BPDAPGD
from shieldkit.gan.cache import pretrained_generator, smoke_generator
from shieldkit.gan.defense_gan import DefenseGAN, InvertAndClassify
from shieldkit.gan.detector import ReconstructionError
from shieldkit.gan.enhanced_inc import EnhancedINC
from shieldkit.gan.generators import (
    VAE,
    DCGANGenerator,
    DefenseGANGenerator,
    Generator,
    dcgan_generator,
    defense_gan_generator,
    vae,
)
from shieldkit.gan.io import image_grid, load_generator, save_generator, write_png
from shieldkit.gan.overpowered import Overpowered, latent_attack
from shieldkit.gan.projection import Projection, project
from shieldkit.gan.train import train_generator

ATTACKS: tuple = (BPDAPGD, Overpowered)
DEFENSES: tuple = (DefenseGAN, InvertAndClassify, ReconstructionError, EnhancedINC)
MODELS: tuple = (defense_gan_generator, dcgan_generator, vae)

__all__ = [
    "ATTACKS",
    "BPDAPGD",
    "DCGANGenerator",
    "DEFENSES",
    "DefenseGAN",
    "DefenseGANGenerator",
    "EnhancedINC",
    "Generator",
    "InvertAndClassify",
    "MODELS",
    "Overpowered",
    "Projection",
    "ReconstructionError",
    "VAE",
    "dcgan_generator",
    "defense_gan_generator",
    "image_grid",
    "latent_attack",
    "load_generator",
    "pretrained_generator",
    "project",
    "save_generator",
    "smoke_generator",
    "train_generator",
    "vae",
    "write_png",
]
