"""Measure the native defences on real MNIST: the figures of docs/defenses.md.

Run by hand (not a test); the figures in docs/defenses.md come from::

    SHIELDKIT_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/bench_defenses.py --n 100

Setting: the tests' undefended model (``mnist_cnn``, one epoch on 20,000 training
images, seed 0, cached by ``shieldkit.models.cache.pretrained``), ``--n`` seeded
test images (default 100), ``--threads`` torch threads (default 1).

* transforms: clean accuracy, FGSM eps=0.3 crafted on the undefended model
  (the defender-oblivious setting of Xu et al.), naive PGD on the deployed model
  and adaptive PGD through ``attack_view`` (BPDA for non-differentiable, exact
  for differentiable defences, EOT over 8 draws for randomised ones); eps=0.3,
  ``--steps`` steps of 0.05 (at least; 0.4 / steps below 8 steps); one-bit depth
  also at eps 0.4 to 0.6.
* detectors: fitted at 5% FPR on 1000 clean test images; detection rate of the
  successful FGSM eps=0.3 examples and FPR on the evaluation images.
* trainers: adversarial training (FGSM, eps=0.25, alpha=0.5, 1 epoch on 10,000
  images, fine-tuning) and distillation (T=100, 1 epoch on 3,000 images, batch 16),
  each attacked by FGSM and by PGD on the margin (Carlini-Wagner) loss at eps=0.25.
* distillation: the distilled student beside the undefended model under attacks
  that differentiate the softmax cross-entropy (FGSM, PGD-CE) and under PGD on
  the logit margin, with the share of images whose cross-entropy input gradient
  is exactly zero and the logits' spread.

Writes Markdown to ``bench/results/defenses.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SHIELDKIT_DATA", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))

import shieldkit as sk  # noqa: E402
from shieldkit.data import load  # noqa: E402
from shieldkit.models import accuracy, predict  # noqa: E402
from shieldkit.models.cache import pretrained  # noqa: E402

TRANSFORMS = [
    ("bit_depth", {}), ("bit_depth", {"bits": 1}), ("jpeg", {}), ("jpeg", {"quality": 25}),
    ("median_smoothing", {}), ("median_smoothing", {"window": 2}), ("randomization", {}),
    ("gaussian_noise", {}), ("gradient_masking", {}),
]


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def transforms_table(model, x, y, steps: int, rows: list[str]) -> None:
    pgd = sk.create_attack("pgd", eps=0.3, steps=steps, step_size=max(0.05, 0.4 / steps), seed=0)
    fgsm_x = sk.create_attack("fgsm", eps=0.3)(model, x, y)
    rows += ["| defence | clean | FGSM 0.3 (oblivious) | naive PGD | adaptive PGD (view) |", "| --- | --- | --- | --- | --- |"]
    rows.append(f"| none | {pct(accuracy(model, x, y))} | {pct(accuracy(model, fgsm_x, y))} | "
                f"{pct(accuracy(model, pgd(model, x, y), y))} | same |")
    for name, params in TRANSFORMS:
        started = time.perf_counter()
        cls = type(sk.create_defense(name, **params))

        def deployed(seed=123, cls=cls, params=params):
            return cls(seed=seed, **params).wrap(model)

        naive = accuracy(deployed(), pgd(deployed(1), x, y), y)
        gradient = "exact" if cls.differentiable else "bpda"
        eot = 8 if cls.randomized else 1
        adaptive = accuracy(deployed(), pgd(deployed(1).attack_view(gradient=gradient, eot=eot), x, y), y)
        label = name + (f" {params}" if params else "")
        rows.append(f"| {label} | {pct(accuracy(deployed(), x, y))} | {pct(accuracy(deployed(), fgsm_x, y))} | "
                    f"{pct(naive)} | {pct(adaptive)} ({gradient}{f', eot={eot}' if eot > 1 else ''}) |")
        print(rows[-1], f"{time.perf_counter() - started:.0f}s", flush=True)
    one_bit_table(model, x, y, steps, rows)


def one_bit_table(model, x, y, steps: int, rows: list[str]) -> None:
    # At eps=0.3 a black pixel reaches only 0.3 and one-bit rounding sends it back to 0; the docs say
    # larger budgets break the squeeze, and this measures it (step size 2.5 * eps / steps, Madry et al.).
    budgets = (0.3, 0.4, 0.5, 0.6)
    rows += ["", "### One-bit depth against the budget", "",
             "BPDA PGD, " + f"{steps} steps of 2.5 * eps / {steps}; robust accuracy of bit_depth {{'bits': 1}}:", "",
             "| eps | " + " | ".join(f"{eps}" for eps in budgets) + " |",
             "| --- | " + " | ".join("---" for _ in budgets) + " |"]
    cells = []
    for eps in budgets:
        pgd = sk.create_attack("pgd", eps=eps, steps=steps, step_size=2.5 * eps / steps, seed=0)
        view = sk.create_defense("bit_depth", bits=1, seed=1).wrap(model).attack_view(gradient="bpda")
        cells.append(pct(accuracy(sk.create_defense("bit_depth", bits=1, seed=123).wrap(model), pgd(view, x, y), y)))
    rows.append("| robust accuracy | " + " | ".join(cells) + " |")
    print(rows[-1], flush=True)


def detectors_table(model, fit_x, x, y, rows: list[str]) -> None:
    x_adv = sk.create_attack("fgsm", eps=0.3)(model, x, y)
    fooled = predict(model, x_adv) != y
    rows += ["", "## Detectors", "", f"FGSM eps=0.3 fools the model on {pct(fooled.float().mean().item())} of the images.", "",
             "| detector | caught (successful FGSM 0.3) | false positives (other clean split) |", "| --- | --- | --- |"]
    for name, params in [("feature_squeezing", {}), ("confidence_threshold", {}), ("mahalanobis", {})]:
        detector = sk.create_defense(name, **params).fit(model, fit_x, fpr=0.05)
        caught = detector.detect(model, x_adv[fooled]).float().mean().item()
        false = detector.detect(model, x).float().mean().item()
        rows.append(f"| {name} | {pct(caught)} | {pct(false)} |")
        print(rows[-1], flush=True)


def trainers_table(model, train, x, y, rows: list[str]) -> None:
    rows += ["", "## Trainers", "",
             "| model | clean | FGSM 0.25 | PGD-margin 0.25 (10 steps) | seconds |", "| --- | --- | --- | --- | --- |"]
    fgsm = sk.create_attack("fgsm", eps=0.25)
    margin = sk.create_attack("pgd", eps=0.25, steps=10, loss="margin", seed=0)

    def row(label, net, seconds):
        rows.append(f"| {label} | {pct(accuracy(net, x, y))} | {pct(accuracy(net, fgsm(net, x, y), y))} | "
                    f"{pct(accuracy(net, margin(net, x, y), y))} | {seconds:.0f} |")
        print(rows[-1], flush=True)

    row("undefended", model, 0)
    started = time.perf_counter()
    adversarial = sk.create_defense("adversarial_training", attack="fgsm", eps=0.25, alpha=0.5).fit(
        model, train.subset(10000, seed=5), epochs=1, seed=0)
    row("adversarial_training (FGSM 0.25, alpha 0.5, 1 epoch x 10k)", adversarial, time.perf_counter() - started)
    started = time.perf_counter()
    distilled = sk.create_defense("distillation", temperature=100.0).fit(
        model, train.subset(3000, seed=6), epochs=1, batch_size=16, seed=0)
    row("distillation (T=100, 1 epoch x 3k, batch 16)", distilled, time.perf_counter() - started)
    distillation_table(model, distilled, x, y, rows)


def zero_gradient_share(net, x, y) -> float:
    """The share of images whose input gradient of the cross-entropy is exactly zero (a saturated softmax)."""
    x = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(net(x), y, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, x)
    return (gradient.flatten(1).abs().amax(1) == 0).float().mean().item()


def distillation_table(model, distilled, x, y, rows: list[str]) -> None:
    # FGSM and PGD-CE differentiate the softmax cross-entropy, which saturates on the student's
    # ~T-fold logits; PGD on the margin loss reads the logits directly (Carlini and Wagner 2016).
    attacks = [
        ("FGSM 0.25", sk.create_attack("fgsm", eps=0.25)),
        ("PGD-CE 0.25 (10 steps)", sk.create_attack("pgd", eps=0.25, steps=10, loss="ce", seed=0)),
        ("PGD-margin 0.25 (10 steps)", sk.create_attack("pgd", eps=0.25, steps=10, loss="margin", seed=0)),
    ]
    rows += ["", "## Distillation", "",
             "| model | clean | " + " | ".join(label for label, _ in attacks)
             + " | zero CE input gradient | logit std |",
             "| --- | --- | " + " | ".join("---" for _ in attacks) + " | --- | --- |"]
    for label, net in [("undefended", model), ("distillation (T=100)", distilled)]:
        robust = [pct(accuracy(net, attack(net, x, y), y)) for _, attack in attacks]
        with torch.no_grad():
            spread = net(x).std().item()
        rows.append(f"| {label} | {pct(accuracy(net, x, y))} | " + " | ".join(robust)
                    + f" | {pct(zero_gradient_share(net, x, y))} | {spread:.1f} |")
        print(rows[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="evaluation images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--only", choices=["transforms", "detectors", "trainers"], default=None)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "defenses.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = pretrained("mnist_cnn", data="mnist", epochs=1, n_train=20000, cache_dir=args.cache_dir, seed=0).eval()
    test = load("mnist", split="test")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(11))
    fit_split, eval_split = test[order[:1000]], test[order[1000:1000 + args.n]]
    x, y = eval_split.x, eval_split.y
    rows = [f"# Native defences on MNIST (n={args.n}, PGD {args.steps} steps)", "",
            "Robust accuracy on the deployed model (lower = stronger attack), on "
            f"{args.n} seeded MNIST test images; written by",
            "", "    SHIELDKIT_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/bench_defenses.py "
            + " ".join(sys.argv[1:]), ""]
    if args.only in (None, "transforms"):
        rows += ["## Transforms", ""]
        transforms_table(model, x, y, args.steps, rows)
    if args.only in (None, "detectors"):
        detectors_table(model, fit_split.x, x, y, rows)
    if args.only in (None, "trainers"):
        trainers_table(model, load("mnist", split="train"), x, y, rows)
    rows += ["", f"Total {time.perf_counter() - started:.0f} s at {args.threads} torch thread(s)."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(rows) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
