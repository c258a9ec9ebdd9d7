"""Defense-GAN / Invert-and-Classify on MNIST, end to end: train a generator, defend, attack, detect.

    SHIELDKIT_DATA=/path/to/data python examples/defense_gan.py
    SHIELDKIT_EXAMPLE_SMALL=1 python examples/defense_gan.py   # a quick run (the tests use it)

Steps: a VAE generator (trained once, then cached), a small CNN, the projection
defence in front of it, FGSM crafted on the undefended CNN (the setting of the
Defense-GAN paper), BPDA-PGD through the projection, the latent-space attack
that breaks it, and the reconstruction-error detector.
"""

from __future__ import annotations

import os
import sys
import time

import torch

import shieldkit as sk
from shieldkit.data import load
from shieldkit.gan import pretrained_generator
from shieldkit.models import accuracy, pretrained

SMALL = os.environ.get("SHIELDKIT_EXAMPLE_SMALL") == "1"


def roc_auc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    greater = (positives[:, None] > negatives[None, :]).float().mean()
    ties = (positives[:, None] == negatives[None, :]).float().mean()
    return (greater + 0.5 * ties).item()


def main() -> int:
    torch.manual_seed(0)
    n_images = 40 if SMALL else 300
    started = time.perf_counter()

    # The quick run trains the same VAE and CNN as tests/component/test_gan.py, so that under its cache it trains nothing.
    generator = pretrained_generator("vae", "mnist", steps=4000 if SMALL else 5000)
    classifier = pretrained("mnist_cnn", data="mnist", epochs=1)
    test = load("mnist", split="test").subset(n_images, seed=0)
    x, y = test.x, test.y
    print(f"generator and classifier ready ({time.perf_counter() - started:.0f} s)")

    # Defense-GAN's projection settings: L=200 steps, R=10 restarts (smaller in the quick run).
    settings = {"steps": 50, "restarts": 4} if SMALL else {}
    inc = sk.create_defense("defense_gan", generator=generator, seed=0, **settings)
    defended = inc.wrap(classifier)
    with torch.no_grad():
        print(f"clean accuracy: undefended {accuracy(classifier, x, y):.1%}, defended {accuracy(defended, x, y):.1%}")

    for eps in (0.1, 0.3):
        x_adv = sk.create_attack("fgsm", eps=eps)(classifier, x, y)
        with torch.no_grad():
            print(f"FGSM eps={eps} on the undefended CNN: undefended {accuracy(classifier, x_adv, y):.1%}, "
                  f"defended {accuracy(defended, x_adv, y):.1%}")

    bpda = sk.create_attack("bpda_pgd", eps=0.3, steps=10 if SMALL else 40, step_size=0.05 if SMALL else 0.01,
                            seed=0)
    result = bpda.run(defended, x[:20], y[:20])
    print(f"BPDA-PGD eps=0.3 through the projection: defended accuracy {1 - result.success_rate:.1%} (20 images)")

    overpowered = sk.create_attack("overpowered", eps=3.9, seed=0, steps=50 if SMALL else 100,
                                   **({"projection_steps": 50, "projection_restarts": 4} if SMALL else {}))
    result = overpowered.run(defended, x[:20], y[:20])
    print(f"latent-space attack, ||delta||_2 <= 3.9: defended accuracy {1 - result.success_rate:.1%} "
          f"(median L2 {result.l2.median().item():.2f})")

    detector = sk.create_defense("reconstruction_error", generator=generator, **settings)
    half = n_images // 2
    detector.fit(classifier, x[:half], fpr=0.05)
    x_adv = sk.create_attack("fgsm", eps=0.3)(classifier, x[half:], y[half:])
    clean_scores, adversarial_scores = detector.score(classifier, x[half:]), detector.score(classifier, x_adv)
    flagged = detector.detect(classifier, x_adv).float().mean().item()
    print(f"reconstruction-error detector vs FGSM eps=0.3: ROC-AUC {roc_auc(clean_scores, adversarial_scores):.3f}, "
          f"{flagged:.0%} flagged at 5% false positives")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
