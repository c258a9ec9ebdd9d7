"""The figures tests/component/test_attacks_native.py guards, measured on the test suite's MNIST CNN, with standard errors.

    SHIELDKIT_DATA=../shared/data OMP_NUM_THREADS=1 python bench/bench_attack_tests.py     # about 2 minutes

Writes bench/results/attack_tests.md. The model is the session fixture ``mnist_model``
of tests/conftest.py (``mnist_cnn`` trained one epoch on 20,000 training images,
seed 0) and the images are the tests' own (the first 400 test images; their first
200 correctly classified ones, or the first 200 as they are). Each figure comes with
its standard error on the test's n: binomial ``sqrt(p (1 - p) / n)`` for a
proportion, ``std / sqrt(n)`` for a mean, the per-image paired change for a
difference on the same images (``sqrt((r + l - (r - l)^2) / n)``, r and l the
shares gained and lost). Thresholds in the tests are the figure minus the margin
in the last column (3 standard errors unless it says 2; plus for an upper bound).
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import shieldkit as sk
from shieldkit.attacks import FGSM, PGD, DeepFool, HueSaturation, Semantic
from shieldkit.data import load
from shieldkit.models.cache import pretrained
from shieldkit.testing import tiny_model

RESULTS = Path(__file__).resolve().parent / "results" / "attack_tests.md"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' hand-written references
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "component"))


class NoisyInput(nn.Module):
    """A randomised model: ``base(x + sigma * N(0, 1))``, a fresh draw from torch's RNG on every forward
    (the same as tests/component/test_attacks_native.py's ``_NoisyInput``)."""

    def __init__(self, base: nn.Module, sigma: float):
        super().__init__()
        self.base, self.sigma = base, sigma

    def forward(self, x):
        return self.base(x + self.sigma * torch.randn_like(x))


def expected_probabilities(model, x, draws=32, seed=123):
    """The expected model's class probabilities (mean softmax over ``draws`` forwards, seeded)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([model(x).softmax(1) for _ in range(draws)]).mean(0)


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def paired(before: torch.Tensor, after: torch.Tensor) -> tuple[float, float]:
    n = before.numel()
    gained = (after & ~before).float().mean().item()
    lost = (before & ~after).float().mean().item()
    change = gained - lost
    return change, math.sqrt(max(gained + lost - change**2, 0.0) / n)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


class Table:
    def __init__(self):
        self.rows: list[tuple[str, ...]] = []

    def add(self, test, claim, n, figure, se, kind, *, percent=True, digits=1, k=3, upper=False):
        bound = figure + k * se if upper else figure - k * se
        scale, unit = (100.0, "%") if percent else (1.0, "")
        fmt = f"{{:.{digits}f}}{unit}"
        self.rows.append((test, claim, str(n), fmt.format(figure * scale), fmt.format(se * scale), kind,
                          f"{'+' if upper else '-'}{k} SE: {fmt.format(bound * scale)}"))
        print(f"{claim}: {fmt.format(figure * scale)} (SE {fmt.format(se * scale)}; bound "
              f"{fmt.format(bound * scale)})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    table = Table()
    model = pretrained("mnist_cnn", data="mnist", epochs=1, n_train=20000,
                       cache_dir=Path(tempfile.mkdtemp(prefix="bench-attacks-")), seed=0).eval()
    test = load("mnist", split="test")
    x400, y400 = test.x[:400], test.y[:400]
    with torch.no_grad():
        right = model(x400).argmax(1) == y400
    xb, yb = x400[right][:200], y400[right][:200]  # mnist_batch
    xf, yf = test.x[:200], test.y[:200]  # mnist_first

    # DeepFool
    result = DeepFool().run(model, xb, yb)
    rho = result.l2 / xb.flatten(1).norm(dim=1)
    iterations = result.info["iterations"].float()
    p = result.success_rate
    table.add("deepfool_fools_mnist", "DeepFool L2: fooled", 200, p, binomial_se(min(p, 0.995), 200),
              "binomial (p at most 99.5%)")
    table.add("deepfool_fools_mnist", "DeepFool L2: mean iterations (an upper bound)", 200, iterations.mean().item(),
              iterations.std().item() / math.sqrt(200), "mean", percent=False, digits=2, upper=True)
    table.add("deepfool_fools_mnist", "DeepFool L2: mean L2 of r over L2 of x, rho (lower end of the band)", 200,
              rho.mean().item(), rho.std().item() / math.sqrt(200), "mean", percent=False, digits=3)
    table.add("deepfool_fools_mnist", "DeepFool L2: mean L2 of r over L2 of x, rho (upper end of the band)", 200,
              rho.mean().item(), rho.std().item() / math.sqrt(200), "mean", percent=False, digits=3, upper=True)
    free = DeepFool(norm="linf").run(model, xb[:32], yb[:32])
    capped = DeepFool(norm="linf", eps=0.05).run(model, xb[:32], yb[:32])
    table.add("deepfool_linf", "DeepFool L-inf: fooled", 32, free.success_rate,
              binomial_se(min(free.success_rate, 1 - 1 / 32), 32), "binomial (p at most 1 - 1/n)")
    change, se = paired(capped.success, free.success)
    table.add("deepfool_linf", "DeepFool L-inf: fooled unbounded minus fooled within eps=0.05", 32, change, se,
              "paired")
    # Median perturbation against the hand-written DeepFool of the test (every class, clipped steps),
    # on the first 300 correctly classified images (mnist_300); SE of the ratio by bootstrap.
    from test_attacks_native import _reference_deepfool
    x300, y300 = x400[right][:300], y400[right][:300]
    for norm in ("l2", "linf"):
        ours = DeepFool(norm=norm).run(model, x300, y300)
        reference = _reference_deepfool(model, x300, y300, norm=norm)
        with torch.no_grad():
            reference_fooled = model(reference).argmax(1) != y300
        ours_sizes = (ours.l2 if norm == "l2" else ours.linf)[ours.success]
        reference_sizes = sk.threat.norm_of(reference - x300, norm)[reference_fooled]
        generator = torch.Generator().manual_seed(0)
        ratios = [ours_sizes[torch.randint(len(ours_sizes), (len(ours_sizes),), generator=generator)].median()
                  / reference_sizes[torch.randint(len(reference_sizes), (len(reference_sizes),),
                                                  generator=generator)].median() for _ in range(200)]
        table.add("deepfool_median", f"DeepFool {norm}: median norm / the hand-written reference's (an upper bound)",
                  300, (ours_sizes.median() / reference_sizes.median()).item(), torch.stack(ratios).std().item(),
                  "bootstrap of the ratio", percent=False, digits=3, upper=True)
        if norm == "l2":
            delta = ours.x_adv - x300
            with torch.no_grad():
                shorter = (model(x300 + 0.95 * delta).argmax(1) == y300).float().mean().item()
                longer = (model((x300 + 1.05 * delta).clamp(0, 1)).argmax(1) != y300).float().mean().item()
            table.add("deepfool_lands_just_past", "DeepFool L2: 5% shorter, classified correctly again", 300,
                      shorter, binomial_se(min(shorter, 1 - 1 / 300), 300), "binomial (p at most 1 - 1/n)")
            table.add("deepfool_lands_just_past", "DeepFool L2: 5% longer (clipped), still fooled", 300,
                      longer, binomial_se(min(longer, 1 - 1 / 300), 300), "binomial (p at most 1 - 1/n)")

    # FGSM and PGD-40 accuracy curves on the first 200 images
    curves = {"fgsm": [accuracy(model, xf, yf)], "pgd": [accuracy(model, xf, yf)]}
    for eps in (0.1, 0.2, 0.3):
        curves["fgsm"].append(accuracy(model, FGSM(eps=eps)(model, xf, yf), yf))
        pgd = PGD(eps=eps, steps=40, step_size=0.01, early_stop=eps < 0.3, seed=0)
        curves["pgd"].append(accuracy(model, pgd(model, xf, yf), yf))
    print(f"accuracy curves (eps 0, 0.1, 0.2, 0.3): {curves}")
    for name in ("fgsm", "pgd"):
        p = curves[name][-1]
        table.add("fgsm_and_pgd_40", f"{name.upper()} eps=0.3: accuracy (an upper bound)", 200, p,
                  binomial_se(max(p, 1 / 200), 200), "binomial (p at least 1/n)", upper=True)
    table.add("fgsm_and_pgd_40", "eps=0.2: FGSM accuracy minus PGD-40 accuracy", 200,
              curves["fgsm"][2] - curves["pgd"][2], binomial_se(curves["fgsm"][2], 200), "binomial of FGSM's")

    # targeted FGSM, targeted PGD
    for norm, eps in (("linf", 0.1), ("l2", 1.5)):
        x, y = xb[:100], yb[:100]
        target = (y + 3) % 10
        x_adv = FGSM(eps=eps, norm=norm).run(model, x, y, target=target).x_adv
        with torch.no_grad():
            lower = (F.cross_entropy(model(x_adv), target, reduction="none")
                     < F.cross_entropy(model(x), target, reduction="none")).float().mean().item()
        table.add("targeted_fgsm", f"targeted FGSM {norm} {eps}: target loss lowered", 100, lower,
                  binomial_se(min(lower, 0.99), 100), "binomial (p at most 99%)")
    for loss in ("ce", "margin", "dlr"):
        x, y = xb[:32], yb[:32]
        targeted = PGD(eps=0.3, steps=20, step_size=0.03, loss=loss, seed=0).run(model, x, y, target=(y + 1) % 10)
        untargeted = PGD(eps=0.3, steps=20, step_size=0.03, loss=loss, seed=0).run(model, x, y)
        for what, p in (("targeted", targeted.success_rate), ("untargeted", untargeted.success_rate)):
            table.add("targeted_pgd", f"PGD-20 {loss} {what}: success", 32, p, binomial_se(min(p, 1 - 1 / 32), 32),
                      "binomial (p at most 1 - 1/n)")

    # restarts
    x, y = xb[:64], yb[:64]
    common = dict(eps=0.1, steps=10, step_size=0.02, seed=3)
    single = PGD(**common).run(model, x, y)
    restarted = PGD(restarts=3, **common).run(model, x, y)
    change, se = paired(single.success, restarted.success)
    table.add("pgd_restarts", "PGD eps=0.1: success with 3 restarts minus 1", 64, change, se, "paired")

    # EOT on a randomised model
    noisy = NoisyInput(model, sigma=0.5).eval()
    x, y = xb[:64], yb[:64]
    outcome = {}
    for eot in (1, 8):
        x_adv = PGD(eps=0.15, steps=10, step_size=0.03, eot=eot, seed=0)(noisy, x, y)
        probabilities = expected_probabilities(noisy, x_adv)
        outcome[eot] = (probabilities.argmax(1) == y,
                        F.nll_loss(probabilities.clamp_min(1e-12).log(), y, reduction="none"))
    clean_expected = (expected_probabilities(noisy, x).argmax(1) == y).float().mean().item()
    print(f"EOT: expected-model accuracy clean {clean_expected:.1%}, eot=1 {outcome[1][0].float().mean():.1%}, "
          f"eot=8 {outcome[8][0].float().mean():.1%}; loss {outcome[1][1].mean():.3f} vs {outcome[8][1].mean():.3f}")
    change, se = paired(outcome[8][0], outcome[1][0])
    table.add("pgd_eot", "PGD-10 on a noisy model: expected-model accuracy, eot=1 minus eot=8", 64, change, se,
              "paired", k=2)
    higher = (outcome[8][1] > outcome[1][1]).float().mean().item()
    table.add("pgd_eot", "PGD-10: images whose expected-model loss is higher with eot=8 than eot=1", 64, higher,
              binomial_se(min(higher, 1 - 1 / 64), 64), "binomial (p at most 1 - 1/n)")
    xg, yg = xb[:8], yb[:8]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        grads = []
        for _ in range(264):
            point = xg.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(F.cross_entropy(noisy(point), yg, reduction="sum"), point)
            grads.append(gradient.flatten(1))
    grads = torch.stack(grads)
    reference = grads[8:].mean(0)  # 256 further draws
    cosine_1 = F.cosine_similarity(grads[0], reference, dim=1)
    cosine_8 = F.cosine_similarity(grads[:8].mean(0), reference, dim=1)
    print(f"gradient cosine to the mean of 256 draws: one draw {cosine_1.tolist()}, mean of 8 {cosine_8.tolist()}")
    table.add("pgd_eot_gradient", "cosine of one draw's gradient to the 256-draw mean (mean over 8 images; an "
              "upper bound)", 8, cosine_1.mean().item(), cosine_1.std().item() / math.sqrt(8), "mean",
              percent=False, digits=3, upper=True)
    table.add("pgd_eot_gradient", "cosine of the mean of 8 draws to the 256-draw mean (mean over 8 images)", 8,
              cosine_8.mean().item(), cosine_8.std().item() / math.sqrt(8), "mean", percent=False, digits=3)

    # semantic, hue-saturation, half precision
    semantic = Semantic().run(model, xb[:100], yb[:100])
    table.add("semantic", "negative images: fooled", 100, semantic.success_rate,
              binomial_se(semantic.success_rate, 100), "binomial")
    torch.manual_seed(0)
    torch.rand(5, 3, 6, 6)
    colour = tiny_model(3, 8).eval()
    hue = HueSaturation(queries=200, seed=0).run(colour, torch.rand(8, 3, 8, 8))
    table.add("hue_saturation", "hue/saturation search, untrained tiny CNN: fooled", 8, hue.success_rate,
              binomial_se(hue.success_rate, 8), "binomial")
    print(f"EOT expected-model loss: eot=1 {outcome[1][1].mean():.3f}, eot=8 {outcome[8][1].mean():.3f}")
    half = copy.deepcopy(model).half()
    x, y = test.x[:64], test.y[:64]
    for name, params in (("fgsm", {"eps": 0.2}), ("pgd", {"eps": 0.2, "steps": 5}),
                         ("pgd", {"eps": 2.0, "norm": "l2", "steps": 5}), ("deepfool", {"steps": 10})):
        low = sk.create_attack(name, seed=0, **params).run(half, x.half(), y)
        full = sk.create_attack(name, seed=0, **params).run(model, x, y)
        label = f"{name} {params.get('norm', 'l2' if name == 'deepfool' else 'linf')}"
        if name == "deepfool":
            table.add("half_precision", f"{label} float16: fooled", 64, low.success_rate,
                      binomial_se(low.success_rate, 64), "binomial")
            ratio = low.l2.median().item() / full.l2.median().item()
            table.add("half_precision", f"{label}: median L2 float16 / float32 (no SE: bound 1.1 kept)", 64, ratio,
                      0.0, "ratio of medians", percent=False, digits=3, upper=True, k=0)
        else:
            change, se = paired(full.success, low.success)
            table.add("half_precision", f"{label}: fooled float16 minus float32, absolute value (an upper bound)", 64, abs(change), se,
                      "paired", upper=True)

    where = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    lines = [
        "# Native attacks: the figures tests/component/test_attacks_native.py guards",
        "",
        f"`python bench/bench_attack_tests.py` on {where}, torch {torch.__version__}, "
        f"{time.perf_counter() - started:.0f} s. The test suite's MNIST CNN (one epoch on 20,000 images, seed 0) and "
        "the tests' images and settings. SE: the standard error on the test's n (binomial for a proportion, "
        "std/sqrt(n) for a mean, the per-image paired change for a difference on the same images). The last "
        "column is the figure minus (for an upper bound, plus) the margin the test allows; no threshold of the "
        "test is looser than it.",
        "",
        "FGSM / PGD-40 accuracy at eps 0, 0.1, 0.2, 0.3 (first 200 test images): FGSM "
        + ", ".join(f"{a:.1%}" for a in curves["fgsm"]) + "; PGD-40 " + ", ".join(f"{a:.1%}" for a in curves["pgd"])
        + ".",
        "",
        f"PGD-10 (eps 0.15) on the noisy model (the CNN on x + 0.5 N(0, 1)), 64 images: expected-model accuracy "
        f"{clean_expected:.1%} clean, {outcome[1][0].float().mean():.1%} with eot=1, "
        f"{outcome[8][0].float().mean():.1%} with eot=8; its mean loss {outcome[1][1].mean():.3f} and "
        f"{outcome[8][1].mean():.3f}.",
        "",
        "| test | claim | n | measured | SE | SE of | margin: bound |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
