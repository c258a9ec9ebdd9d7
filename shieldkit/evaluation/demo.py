"""The default evaluation (``shieldkit evaluate`` with no arguments, what ``make demo`` runs).

On the digits bundled inside the package (no download), it trains once and caches a
reference CNN and a small generator, then evaluates noise, semantic, FGSM, PGD,
DeepFool, one torchattacks and one ART attack against no defence, JPEG, bit
depth, randomisation, gradient masking, Defense-GAN and a quickly adversarially
trained model, naive and adaptive, and writes the report. Budgets are chosen
to finish in a few minutes on two CPU cores.
"""

from __future__ import annotations

import logging
from typing import Any

from shieldkit.core.seeding import seeded
from shieldkit.evaluation.config import ComponentSpec, EvalConfig
from shieldkit.evaluation.suite import Setup

logger = logging.getLogger(__name__)

DEMO_N = 100
DEMO_EPS = [0.1, 0.2, 0.3]
#: a narrow mnist_cnn (8 and 16 channels): about 97% on the digits, 4x cheaper to attack than width 32.
MODEL_WIDTH = 8
MODEL_EPOCHS = 8
GENERATOR_STEPS = 1500

#: (name, params) in order of preference; the first registered one joins the suite.
TORCHATTACKS_CHOICES = (("apgd.torchattacks", {"steps": 10}), ("mifgsm.torchattacks", {"steps": 10}),
                        ("pgd.torchattacks", {"steps": 10}))
# Budgets: every query of a black-box attack on Defense-GAN is a projection, and DeepFool on
# a defence that masks gradients runs all its steps; these keep the demo to minutes on 2 cores.
ART_CHOICES = (("square.art", {"queries": 40}), ("bim.art", {"steps": 10}), ("fgsm.art", {}))
NATIVE_ATTACKS = (("noise", {"restarts": 4}), ("semantic", {}), ("fgsm", {}), ("pgd", {"steps": 10}),
                  ("deepfool", {"steps": 10}))
DEFENSES = (
    ("none", {}, {}),
    ("jpeg", {"quality": 50}, {}),
    ("bit_depth", {"bits": 2}, {}),
    ("randomization", {"min_size": 25}, {}),
    ("gradient_masking", {}, {}),
    ("defense_gan", {"steps": 30, "restarts": 2}, {}),
    ("adversarial_training", {"attack": "pgd", "eps": 0.3, "alpha": 0.5, "attack_params": {"steps": 3}},
     {"epochs": 3, "batch_size": 64}),
)


def demo_config() -> EvalConfig:
    """The demo's settings; the suite is filled in by :func:`prepare` from what is registered."""
    config = EvalConfig(eps=list(DEMO_EPS), n=DEMO_N, batch_size=DEMO_N, out="shieldkit-runs/demo",
                        examples=6, eot=4, suite="quick")
    config.model = {"name": "mnist_cnn", "width": MODEL_WIDTH, "epochs": MODEL_EPOCHS}
    config.data = {"name": "digits"}
    config.attacks = demo_attacks()
    config.defenses = [ComponentSpec(name, dict(params), fit=dict(fit)) for name, params, fit in DEFENSES]
    return config


def demo_attacks() -> list[ComponentSpec]:
    """Native attacks plus the first available torchattacks and ART attack."""
    from shieldkit.core.component import component_params
    from shieldkit.plugins.registry import get_registry, list_attacks

    specs = [ComponentSpec(name, dict(params)) for name, params in NATIVE_ATTACKS]
    registered = set(list_attacks())
    missing = []
    for choices, library, extra in ((TORCHATTACKS_CHOICES, "torchattacks", "torchattacks"), (ART_CHOICES, "ART", "art")):
        for name, params in choices:
            if name in registered:
                accepted = component_params(get_registry().resolve("attack", name).obj)
                specs.append(ComponentSpec(name, {k: v for k, v in params.items() if k in accepted}))
                break
        else:
            missing.append((library, extra))
    if missing:
        logger.warning("demo: no %s attack is available (not installed); running the native attacks only: "
                       "pip install 'shieldkit[%s]'", " or ".join(library for library, _ in missing),
                       ",".join(extra for _, extra in missing))
    return specs


def prepare(config: EvalConfig, quiet: bool = True) -> Setup:
    """Data, the reference model, the generator and the resolved suite of the demo."""
    from shieldkit.data import load
    from shieldkit.evaluation.results import check_writable
    from shieldkit.evaluation.suite import resolve_attacks, resolve_suite
    from shieldkit.plugins.registry import list_defenses

    resolve_attacks(config.attacks, config.norm, config.eps, config.bounds)  # before the model is trained
    check_writable(config.out)
    registered = {name.split(".")[0] for name in list_defenses()}
    missing = [spec.name for spec in config.defenses if spec.name != "none" and spec.name not in registered]
    if missing:
        logger.warning("demo: defences not available yet, left out: %s", ", ".join(missing))
    config.defenses = [spec for spec in config.defenses if spec.name not in missing]
    data = load("digits", split="test")
    train = load("digits", split="train")
    model = demo_model(train, quiet=quiet)
    defenses: list[Any] = []
    for spec in config.defenses:
        if spec.name == "defense_gan":
            defenses.append(_defense_gan(spec, train, quiet))
        else:
            defenses.append(spec)
    return Setup(config, model, data, train, resolve_suite(config.attacks, defenses, config))


def demo_model(train, quiet: bool = True):
    """The reference classifier: a narrow ``mnist_cnn`` trained on the digits once, then loaded from the cache."""
    import os

    import torch

    from shieldkit.models import fit_classifier, mnist_cnn
    from shieldkit.models.cache import cache_root

    path = cache_root() / "models" / f"evaluate-demo-mnist_cnn-w{MODEL_WIDTH}-e{MODEL_EPOCHS}-s0.pt"
    with seeded(0):
        model = mnist_cnn(width=MODEL_WIDTH)
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception as error:  # noqa: BLE001 - a damaged cache file is retrained
            logger.warning("demo: retraining the reference model (%s)", error)
    logger.info("demo: training the reference classifier on %d digits (cached in %s)", len(train), path)
    fit_classifier(model, train, epochs=MODEL_EPOCHS, seed=0, quiet=quiet)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), temporary)
    os.replace(temporary, path)
    return model.eval()


def _defense_gan(spec: ComponentSpec, train, quiet: bool) -> Any:
    """Defense-GAN with a small VAE generator trained once on the digits and cached."""
    from shieldkit.gan.cache import pretrained_generator

    generator = pretrained_generator("vae", data="digits", steps=GENERATOR_STEPS, quiet=quiet)
    return ComponentSpec(spec.name, {**spec.params, "generator": generator}, spec.label, spec.fit)
