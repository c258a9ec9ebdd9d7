"""shieldkit's native defences, one per file.

``DEFENSES`` is the one place that lists them; the native plugin registers each.
"""

from shieldkit.defenses.adversarial_training import AdversarialTraining
from shieldkit.defenses.bit_depth import BitDepth
from shieldkit.defenses.confidence_threshold import ConfidenceThreshold
from shieldkit.defenses.distillation import Distillation
from shieldkit.defenses.feature_denoising import DenoisingBlock, FeatureDenoising, insert_denoising
from shieldkit.defenses.feature_squeezing import FeatureSqueezing
from shieldkit.defenses.gaussian_noise import GaussianNoise
from shieldkit.defenses.gradient_masking import GradientMasking
from shieldkit.defenses.jpeg import JPEG
from shieldkit.defenses.logit_pairing import LogitPairing
from shieldkit.defenses.mahalanobis import Mahalanobis
from shieldkit.defenses.median_smoothing import MedianSmoothing
from shieldkit.defenses.noise_training import NoiseTraining
from shieldkit.defenses.randomization import Randomization
from shieldkit.defenses.randomized_smoothing import RandomizedSmoothing

DEFENSES: tuple = (
    Randomization,
    JPEG,
    BitDepth,
    MedianSmoothing,
    GaussianNoise,
    GradientMasking,
    FeatureSqueezing,
    ConfidenceThreshold,
    Mahalanobis,
    AdversarialTraining,
    LogitPairing,
    Distillation,
    FeatureDenoising,
    RandomizedSmoothing,
    NoiseTraining,
)

__all__ = [
    "DEFENSES",
    "AdversarialTraining",
    "BitDepth",
    "ConfidenceThreshold",
    "DenoisingBlock",
    "Distillation",
    "FeatureDenoising",
    "FeatureSqueezing",
    "GaussianNoise",
    "GradientMasking",
    "JPEG",
    "LogitPairing",
    "Mahalanobis",
    "MedianSmoothing",
    "NoiseTraining",
    "Randomization",
    "RandomizedSmoothing",
    "insert_denoising",
]
