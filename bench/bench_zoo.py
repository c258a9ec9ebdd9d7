"""The default evaluation on the defended zoo of the tests, beside the hand-written adaptive references.

Run by hand (not a test)::

    SHIELDKIT_DATA=../shared/data .venv/bin/python bench/bench_zoo.py

For each model of ``tests/support/defended_zoo.py`` (the defence inside ``forward()``, on the
MLP base of the tests) and the PGD-trained CNN: ``shieldkit.evaluate(model, data,
eps=[0.1, 0.3])`` with every default on the first 100 MNIST test images, told
nothing, against ``tests/support/zoo_references.py``'s attack written knowing the defence.
``tests/e2e/test_evaluate_zoo.py`` asserts "reported <= reference + 5 points" (for a randomised
model: within 5 points either way of the reference's expected accuracy over fresh draws at its
adversarial points); this prints the figures with their 95% intervals and writes
``bench/results/zoo.md`` (``--out``). A randomised model is evaluated a second time with another
seed (``--second-seed``): the two runs should agree within their intervals.
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
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

EPSILONS = (0.1, 0.3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "zoo.md"))
    parser.add_argument("--second-seed", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="zoo model names (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from support import defended_zoo
    from support.zoo_references import FRESH_DRAWS, RANDOM_JUDGED, REFERENCES, reference_attack

    from shieldkit.data import ImageData, load
    from shieldkit.evaluation import evaluate
    from shieldkit.evaluation.intervals import disjoint
    from shieldkit.models.cache import pretrained

    base = pretrained("mlp", data="mnist", epochs=2, n_train=10000, seed=0).eval().requires_grad_(False)
    test = load("mnist", split="test")
    x, y = test.x[:args.images], test.y[:args.images]
    cache = Path(os.environ.get("SHIELDKIT_CACHE", REPO / "bench" / ".cache")) / "zoo"
    names = args.only or list(REFERENCES) + ["pgd_trained"]
    cases = [(name, defended_zoo.ZOO[name](base).eval(), REFERENCES[name]) for name in names if name in REFERENCES]
    if "pgd_trained" in names:
        robust = defended_zoo.pgd_trained_cnn(cache).requires_grad_(False)
        cases.append(("pgd_trained (small CNN)", robust, (lambda _: robust, 1)))
    lines = ["# The default evaluation on the defended zoo (told nothing) vs hand-written adaptive attacks", "",
             f"`python bench/bench_zoo.py` — first {args.images} MNIST test images, L-inf, {args.threads} thread(s); "
             "robust accuracy in % with its 95% interval; the reference knows the defence (BPDA / EOT / margin loss, "
             "its best iterate). A randomised model (judging draws > 1) is reported by its expected accuracy, and its "
             f"reference is the expectation over {FRESH_DRAWS} fresh draws at the reference's adversarial points; "
             f"it is evaluated again with seed {args.second_seed}: *agree* says whether the two runs' intervals "
             "overlap.", "",
             "| model | flags | remedies | judging draws | eps | naive | reported (default evaluation) | majority vote "
             f"| seed {args.second_seed} | agree | reference | gap (points) | attack that broke most "
             "| flags raised by the checklist | seconds |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | ---: |"]
    cell = lambda value, interval: f"{100 * value:.1f} [{100 * interval[0]:.0f}-{100 * interval[1]:.0f}]"  # noqa: E731
    for name, model, (differentiate, draws) in cases:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            report = evaluate(model, ImageData(x, y, name="mnist"), eps=list(EPSILONS), out_dir=out, quiet=True,
                              batch_size=args.images)
        seconds = time.perf_counter() - started
        record = report.run.defense("none")
        second = None
        if record.judging_draws > 1:
            with tempfile.TemporaryDirectory() as out:
                second = evaluate(model, ImageData(x, y, name="mnist"), eps=list(EPSILONS), out_dir=out, quiet=True,
                                  batch_size=args.images, seed=args.second_seed).run.defense("none")
        flags = ", ".join(record.diagnosis.diagnosis.flags) or "none"
        remedies = ", ".join(note.name for note in record.diagnosis.remedies) or "none"
        checks = ", ".join(sorted({f"{c.check} ({c.mode})" for c in record.checks if c.passed is False})) or "none"
        forward = model if differentiate is None else differentiate(base)
        steps = 100 if name.startswith("pgd_trained") else 30
        for eps in EPSILONS:
            fresh = FRESH_DRAWS if name in RANDOM_JUDGED else None
            reference = reference_attack(forward, model, x, y, eps, draws, 4 if fresh else 1, steps=steps,
                                         fresh_draws=fresh).mean().item()
            summary = record.eps[f"{eps:g}"]
            broke = max(summary.broken_by.items(), key=lambda item: item[1], default=("-", 0))
            majority = "-" if summary.majority is None else f"{100 * summary.majority['adaptive']:.1f}"
            again, agree = "-", "-"
            if second is not None:
                other = second.eps[f"{eps:g}"]
                again = cell(other.adaptive, other.interval["adaptive"])
                agree = "no" if disjoint(other.interval["adaptive"], summary.interval["adaptive"]) else "yes"
            lines.append(f"| {name} | {flags} | {remedies} | {record.judging_draws} | {eps:g} | "
                         f"{cell(summary.naive, summary.interval['naive'])} | "
                         f"{cell(summary.adaptive, summary.interval['adaptive'])} | {majority} | {again} | {agree} | "
                         f"{100 * reference:.1f} | {100 * (summary.adaptive - reference):+.1f} | "
                         f"{broke[0]} ({broke[1]}) | {checks} | {seconds:.0f} |")
        print(lines[-2], lines[-1], sep="\n", flush=True)
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
