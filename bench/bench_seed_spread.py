"""How far the figures of five more tests move with the session model's seed.

    SHIELDKIT_DATA=../shared/data python bench/bench_seed_spread.py --seeds 0 1 2 3 4     # about 25 minutes

Writes bench/results/seed_spread.md. These tests held a figure measured on the session model trained
under seed 0, plus or minus 3 binomial standard errors; under ``SHIELDKIT_TEST_SEED=1`` (another
model, as a fresh machine's CPU kernels give) they failed, because a model-to-model spread is no
sampling error. Each figure is measured here, at the test's own setting, on the model
tests/conftest.py's ``train_mnist_model`` trains under each seed (one thread, deterministic
algorithms); a test's bound is the worst seed's figure with 3 binomial standard errors of it:

- ``eot``: tests/component/test_attacks_native.py::test_pgd_eot_beats_a_single_draw_on_a_randomised_model, PGD
  (10 steps) with eot=1 and eot=8 on the CNN under Gaussian input noise (sigma 0.5), 64 images:
  expected-model accuracy after each, and the share of images whose expected-model loss eot=8 raises
  more; at eps 0.15 and 0.1.
- ``confidence_threshold``: tests/component/test_defenses.py::test_outlier_detectors_flag_noise_but_not_new_clean_digits:
  uniform noise flagged (n = 100) and false positives (n = 500) at 5% FPR.
- ``adversarial_training``: ...keeps_clean_accuracy_and_halves_fgsm_error: clean (n = 2000), FGSM 0.25
  accuracy trained and undefended (n = 500).
- ``randomized_smoothing``: ...never_weaker_than_naive[randomized_smoothing]: naive PGD's robust
  accuracy (n = 100), the figure the test holds from below.
- ``distillation``: ...masks_softmax_gradients_but_not_logit_margins: FGSM 0.25 and margin PGD 0.25,
  distilled and undefended (n = 100), and the logit-spread ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SHIELDKIT_DATA", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "tests"))  # the session model's training and the tests' helpers
sys.path.insert(0, str(REPO / "tests" / "component"))  # test_attacks_native\'s helpers

from conftest import train_mnist_model  # noqa: E402
from test_attacks_native import _expected_probabilities, _NoisyInput  # noqa: E402

import shieldkit as sk  # noqa: E402
from shieldkit.attacks import PGD  # noqa: E402
from shieldkit.data import load  # noqa: E402
from shieldkit.defenses import RandomizedSmoothing  # noqa: E402
from shieldkit.models import accuracy  # noqa: E402

RESULTS = REPO / "bench" / "results" / "seed_spread.md"


def eot_figures(model, x, y) -> dict:
    noisy = _NoisyInput(model).eval()
    out = {}
    for eps in (0.15, 0.1):
        correct, loss = {}, {}
        for eot in (1, 8):
            result = PGD(eps=eps, steps=10, step_size=eps / 5, eot=eot, seed=0).run(noisy, x, y)
            probabilities = _expected_probabilities(noisy, result.x_adv)
            correct[eot] = (probabilities.argmax(1) == y).float().mean().item()
            loss[eot] = F.nll_loss(probabilities.clamp_min(1e-12).log(), y, reduction="none")
        out[f"eps {eps}: eot=1 accuracy"] = (correct[1], len(y))
        out[f"eps {eps}: eot=8 accuracy"] = (correct[8], len(y))
        out[f"eps {eps}: gain (points)"] = (correct[1] - correct[8], len(y))
        out[f"eps {eps}: loss higher with eot=8"] = ((loss[8] > loss[1]).float().mean().item(), len(y))
    return out


def defense_figures(model, test, train, splits) -> dict:
    out = {}
    x, y = splits["eval"].x, splits["eval"].y
    noise = torch.rand(100, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    detector = sk.create_defense("confidence_threshold").fit(model, splits["fit"].x, fpr=0.05)
    out["confidence_threshold: noise flagged"] = (detector.detect(model, noise).float().mean().item(), 100)
    out["confidence_threshold: false positives"] = (detector.detect(model, x).float().mean().item(), len(y))

    robust = sk.create_defense("adversarial_training", attack="fgsm", eps=0.25, alpha=0.5).fit(
        model, train.subset(10000, seed=5), epochs=1, seed=0)
    fgsm = sk.create_attack("fgsm", eps=0.25)
    out["adversarial_training: clean"] = (accuracy(robust, test.subset(2000, seed=3)), 2000)
    out["adversarial_training: FGSM trained"] = (accuracy(robust, fgsm(robust, x, y), y), len(y))
    out["adversarial_training: FGSM undefended"] = (accuracy(model, fgsm(model, x, y), y), len(y))

    x100, y100 = x[:100], y[:100]
    pgd = sk.create_attack("pgd", eps=0.3, steps=10, step_size=0.05, seed=0)
    naive = accuracy(RandomizedSmoothing(seed=123).wrap(model), pgd(RandomizedSmoothing(seed=1).wrap(model), x100, y100), y100)
    out["randomized_smoothing: naive PGD"] = (naive, 100)

    distilled = sk.create_defense("distillation", temperature=100.0).fit(
        model, train.subset(3000, seed=6), epochs=1, batch_size=16, seed=0)
    with torch.no_grad():
        out["distillation: logit std ratio"] = (distilled(x100).std().item() / model(x100).std().item(), None)
    margin_pgd = sk.create_attack("pgd", eps=0.25, steps=10, loss="margin", seed=0)
    out["distillation: FGSM undefended"] = (accuracy(model, fgsm(model, x100, y100), y100), 100)
    out["distillation: FGSM distilled"] = (accuracy(distilled, fgsm(distilled, x100, y100), y100), 100)
    out["distillation: margin PGD undefended"] = (accuracy(model, margin_pgd(model, x100, y100), y100), 100)
    out["distillation: margin PGD distilled"] = (accuracy(distilled, margin_pgd(distilled, x100, y100), y100), 100)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test, train = load("mnist", split="test"), load("mnist", split="train")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(11))  # test_defenses.py's splits
    splits = {"fit": test[order[:1000]], "eval": test[order[1000:1500]]}
    cache = tempfile.mkdtemp(prefix="seed-spread-")
    figures: dict[int, dict] = {}
    for seed in args.seeds:
        started = time.perf_counter()
        model = train_mnist_model(cache, seed=seed)
        batch = test.x[:64], test.y[:64]  # conftest's mnist_batch
        figures[seed] = {**eot_figures(model, *batch), **defense_figures(model, test, train, splits)}
        print(seed, {k: round(v, 3) for k, (v, _) in figures[seed].items()}, f"{time.perf_counter() - started:.0f}s",
              flush=True)
    write(figures, args)


def write(figures: dict[int, dict], args) -> None:
    seeds = sorted(figures)
    lines = ["# The spread of five tests' figures across session-model seeds", "",
             f"`python bench/bench_seed_spread.py --seeds {' '.join(map(str, seeds))}` on {platform.machine()}, "
             f"torch {torch.__version__}, {args.threads} thread(s). The model is tests/conftest.py's "
             "`train_mnist_model` under each seed; the settings are the script's docstring's. Shares in %, n images "
             "each; 'lowest - 3 SE' / 'highest + 3 SE' is the worst seed's figure with 3 binomial standard errors "
             "of it (a 0% or 100% figure taken one image from the edge), the bound a test may hold.", "",
             "| figure | n | " + " | ".join(f"seed {s}" for s in seeds) + " | lowest - 3 SE | highest + 3 SE |",
             "|---|---:|" + "---:|" * (len(seeds) + 2)]
    for name in figures[seeds[0]]:
        values = [figures[s][name][0] for s in seeds]
        n = figures[seeds[0]][name][1]
        if n is None:
            lines.append(f"| {name} | - | " + " | ".join(f"{v:.1f}" for v in values) + " | - | - |")
            continue

        def se3(p, n=n):
            p = min(max(p, 1 / n), 1 - 1 / n)
            return 3 * (p * (1 - p) / n) ** 0.5

        low, high = min(values), max(values)
        lines.append(f"| {name} | {n} | " + " | ".join(f"{100 * v:.1f}" for v in values)
                     + f" | {100 * (low - se3(low)):.1f} | {100 * (high + se3(high)):.1f} |")
    lines.append("")
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
