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
* tests (``--only tests``, appended to the results file as its last section, the
  tables above left as they are): the figures tests/component/test_defenses.py and
  tests/e2e/test_evaluate.py guard, each at the test's own setting (images, eps,
  steps, EOT draws), beside a hand-written reference PGD (``reference_pgd``:
  forward through the deployed model's transform and classifier, identity
  backward through non-differentiable transforms, gradients averaged over EOT
  draws; no shieldkit attack or attack view).

Writes Markdown to ``bench/results/defenses.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SHIELDKIT_DATA", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "tests"))  # the hand-written reference attack the tests use
sys.path.insert(0, str(REPO))

from support.defense_references import reference_pgd  # noqa: E402

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


# ----------------------------------------------------------- the tests' settings (--only tests)

TESTS_SECTION = "## The tests' settings"
ADAPTIVE_N, EOT = 100, 8
TEST_PGD = {"eps": 0.3, "steps": 10, "step_size": 0.05, "seed": 0}


def tests_adaptive_table(model, x, y, rows: list[str]) -> None:
    """tests/component/test_defenses.py::test_adaptive_pgd_through_the_attack_view_*: every transform, n=100, EOT 8."""
    from shieldkit.defenses import DEFENSES

    pgd = sk.create_attack("pgd", **TEST_PGD)
    cases = [(cls, {}) for cls in DEFENSES if cls.kind == "transform"] + [(type(sk.create_defense("bit_depth")), {"bits": 1})]
    rows += ["", "### Adaptive PGD against every transform (tests/component/test_defenses.py)", "",
             f"n = {len(y)} (the first of the tests' evaluation split, the images above), PGD eps=0.3, 10 steps of 0.05, "
             f"seed 0; EOT over {EOT} draws for randomised defences (view and reference alike); robust accuracy on "
             "the deployed model (seed 123); the reference is the hand-written PGD (`reference_pgd`):", "",
             "| defence | naive PGD | adaptive PGD (view) | reference PGD (hand-written) | undefended PGD |",
             "| --- | --- | --- | --- | --- |"]
    undefended = accuracy(model, pgd(model, x, y), y)
    for cls, params in cases:
        started = time.perf_counter()
        naive = accuracy(cls(seed=123, **params).wrap(model), pgd(cls(seed=1, **params).wrap(model), x, y), y)
        gradient = "exact" if cls.differentiable else "bpda"
        eot = EOT if cls.randomized else 1
        view = cls(seed=1, **params).wrap(model).attack_view(gradient=gradient, eot=eot)
        adaptive = accuracy(cls(seed=123, **params).wrap(model), pgd(view, x, y), y)
        reference_x = reference_pgd(cls(seed=7, **params).wrap(model), x, y, draws=eot)
        reference = accuracy(cls(seed=123, **params).wrap(model), reference_x, y)
        label = cls.family + (f" {params}" if params else "")
        rows.append(f"| {label} | {pct(naive)} | {pct(adaptive)} ({gradient}{f', eot={eot}' if eot > 1 else ''}) | "
                    f"{pct(reference)} | {pct(undefended)} |")
        print(rows[-1], f"{time.perf_counter() - started:.0f}s", flush=True)


def tests_figures_table(model, test, train, fit_split, eval_split, rows: list[str]) -> None:
    """The single figures of tests/component/test_defenses.py's MNIST tests, at their own sizes."""
    x, y = eval_split.x, eval_split.y
    n = len(y)
    rows += ["", "### Other figures the defence tests guard (tests/component/test_defenses.py)", "",
             f"On the tests' evaluation split (n = {n}: the {n} seeded test images after the 1,000 fitting ones) "
             "unless the row says otherwise:", "", "| test | figure | value | n |", "| --- | --- | --- | --- |"]

    def add(test_name, figure, value, count):
        rows.append(f"| {test_name} | {figure} | {pct(value)} | {count} |")
        print(rows[-1], flush=True)

    fgsm25 = sk.create_attack("fgsm", eps=0.25)
    started = time.perf_counter()
    robust = sk.create_defense("adversarial_training", attack="fgsm", eps=0.25, alpha=0.5).fit(
        model, train.subset(10000, seed=5), epochs=1, seed=0)
    print(f"adversarial training {time.perf_counter() - started:.0f}s", flush=True)
    add("adversarial_training", "clean, adversarially trained (2,000 test images, subset seed 3)",
        accuracy(robust, test.subset(2000, seed=3)), 2000)
    add("adversarial_training", "FGSM 0.25, undefended", accuracy(model, fgsm25(model, x, y), y), n)
    add("adversarial_training", "FGSM 0.25, adversarially trained", accuracy(robust, fgsm25(robust, x, y), y), n)

    squeezed = sk.create_defense("bit_depth", bits=1).wrap(model)
    fgsm30 = sk.create_attack("fgsm", eps=0.3)(model, x, y)
    add("one_bit_squeezing", "clean, undefended", accuracy(model, x, y), n)
    add("one_bit_squeezing", "clean, bit_depth {'bits': 1}", accuracy(squeezed, x, y), n)
    add("one_bit_squeezing", "FGSM 0.3 (oblivious), bit_depth {'bits': 1}", accuracy(squeezed, fgsm30, y), n)

    fooled = predict(model, fgsm30) != y
    detector = sk.create_defense("feature_squeezing", bits=1, window=2).fit(model, fit_split.x, fpr=0.05)
    add("joint_squeezing_detector", "FGSM 0.3 fools the model", fooled.float().mean().item(), n)
    add("joint_squeezing_detector", "caught (successful FGSM 0.3)",
        detector.detect(model, fgsm30[fooled]).float().mean().item(), int(fooled.sum()))
    add("joint_squeezing_detector", "false positives", detector.detect(model, x).float().mean().item(), n)

    noise = torch.rand(100, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for name in ("confidence_threshold", "mahalanobis"):
        outlier = sk.create_defense(name).fit(model, fit_split.x, fpr=0.05)
        add(f"outlier_detectors[{name}]", "uniform noise flagged", outlier.detect(model, noise).float().mean().item(), 100)
        add(f"outlier_detectors[{name}]", "false positives", outlier.detect(model, x).float().mean().item(), n)
        if name == "mahalanobis":
            add("mahalanobis_cross_fitted", "false positives on the 1,000 fitting images",
                outlier.detect(model, fit_split.x).float().mean().item(), len(fit_split))


def tests_evaluate_table(model, test, train, rows: list[str]) -> None:
    """tests/e2e/test_evaluate.py: the MNIST acceptance run and the detector run on the digits, as the tests call them."""
    from shieldkit.data import load as load_data
    from shieldkit.evaluation import evaluate
    from shieldkit.models import fit_classifier, mlp

    trainer = {"name": "adversarial_training", "attack": "pgd", "eps": 0.3, "alpha": 0.0,
               "attack_params": {"steps": 3}, "fit": {"epochs": 1, "batch_size": 50}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        report = evaluate(model, test, attacks=["fgsm", ("pgd", {"steps": 10}), "noise"],
                          defenses=["none", "jpeg", "bit_depth", "gradient_masking", trainer], eps=[0.3], n=100,
                          batch_size=100, out_dir=Path(out) / "mnist", train_data=train.subset(2000, seed=1), quiet=True)
    print(f"evaluate (MNIST) {time.perf_counter() - started:.0f}s", flush=True)
    # The evaluation's samples: Runner._select with seed 0; its PGD takes eps / 4 per step.
    chosen = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:100].sort().values
    x, y = test.x[chosen], test.y[chosen]
    rows += ["", "### The evaluation's MNIST acceptance run (tests/e2e/test_evaluate.py)", "",
             "`evaluate(mnist_model, mnist test, attacks=[fgsm, pgd steps=10, noise], eps=[0.3], n=100, batch_size=100)`, "
             "robust accuracy (worst case per sample); the reference is the hand-written BPDA PGD "
             "(`reference_pgd`, 10 steps of eps / 4 = 0.075, the evaluation's PGD step) on the same 100 samples:", "",
             "| defence | naive | adaptive | reference BPDA PGD |", "| --- | --- | --- | --- |"]
    for name in ("none", "jpeg", "bit_depth", "gradient_masking", "adversarial_training"):
        reference = "-"
        if name in ("jpeg", "bit_depth", "gradient_masking"):
            deployed = sk.create_defense(name).wrap(model)
            reference = pct(accuracy(deployed, reference_pgd(deployed, x, y, step_size=0.075), y))
        rows.append(f"| {name} | {pct(report.robust_accuracy(name, 0.3, mode='naive'))} | "
                    f"{pct(report.robust_accuracy(name, 0.3))} | {reference} |")
        print(rows[-1], flush=True)

    digits_test, digits_train = load_data("digits", split="test"), load_data("digits", split="train")
    torch.manual_seed(0)  # tests/conftest.py's digits_mlp
    mlp_model = fit_classifier(mlp(hidden=(64,)), digits_train, epochs=8, seed=0).eval()
    with tempfile.TemporaryDirectory() as out:
        report = evaluate(mlp_model, digits_test, attacks=["fgsm", ("pgd", {"steps": 5})], eps=[0.1, 0.3],
                          defenses=["randomization", "feature_squeezing"], n=60, batch_size=60, eot=4,
                          train_data=digits_train, out_dir=out, quiet=True)
    detector = report.summary["defenses"][1]
    rows += ["", "`evaluate(digits_mlp, digits test, attacks=[fgsm, pgd steps=5], defenses=[randomization, "
             "feature_squeezing], eps=[0.1, 0.3], n=60, eot=4)` (tests/conftest.py's digits MLP), the detector's figures:",
             "", "| eps | detection rate | misclassified (its n) | correct or detected | classifier only |",
             "| --- | --- | --- | --- | --- |"]
    for key, entry in detector["eps"].items():
        missed = entry["clean_correct"] - round(entry["classifier_only"] * 60)
        rows.append(f"| {key} | {pct(entry['detection_rate'])} | {missed} of 60 | {pct(entry['correct_or_detected'])} | "
                    f"{pct(entry['classifier_only'])} |")
        print(rows[-1], flush=True)


def tests_section(model, test, train, fit_split, eval_split) -> list[str]:
    started = time.perf_counter()
    rows = [TESTS_SECTION, "",
            "The figures the robustness assertions of tests/component/test_defenses.py and tests/e2e/test_evaluate.py guard, each "
            "measured at the test's own setting; appended by",
            "", "    SHIELDKIT_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/bench_defenses.py --only tests"]
    tests_adaptive_table(model, eval_split.x[:ADAPTIVE_N], eval_split.y[:ADAPTIVE_N], rows)
    tests_figures_table(model, test, train, fit_split, eval_split, rows)
    tests_evaluate_table(model, test, train, rows)
    rows += ["", f"This section: {time.perf_counter() - started:.0f} s at {torch.get_num_threads()} torch thread(s)."]
    return rows


def append_section(path: Path, rows: list[str]) -> None:
    """Append ``rows`` to ``path`` as its last section, replacing an earlier copy of it; the rest is kept as it is."""
    text = path.read_text() if path.is_file() else ""
    text = text.split("\n" + TESTS_SECTION + "\n")[0].rstrip("\n")
    path.write_text(text + "\n\n" + "\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="evaluation images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--only", choices=["transforms", "detectors", "trainers", "tests"], default=None)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "defenses.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = pretrained("mnist_cnn", data="mnist", epochs=1, n_train=20000, cache_dir=args.cache_dir, seed=0).eval()
    test = load("mnist", split="test")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(11))
    fit_split, eval_split = test[order[:1000]], test[order[1000:1000 + args.n]]
    x, y = eval_split.x, eval_split.y
    if args.only == "tests":  # the tests' settings: appended, the other tables kept as they are
        append_section(Path(args.out), tests_section(model, test, load("mnist", split="train"), fit_split,
                                                     test[order[1000:1500]]))
        print(f"appended to {args.out}")
        return
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
