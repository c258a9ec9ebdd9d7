"""Benchmark shieldkit's randomised-smoothing CERTIFY against ART's on the same base model and images.

Run by hand (not a test)::

    SHIELDKIT_DATA=../shared/data .venv/bin/python bench/bench_smoothing.py                 # n=1000, 100 images
    SHIELDKIT_DATA=../shared/data .venv/bin/python bench/bench_smoothing.py --n 200 --images 20   # a quick look

Setting: ``mnist_cnn(width=8)`` trained with ``noise_training`` (sigma 0.25) on a
seeded subset of the real MNIST training images (or ``--model FILE``), the same
seeded subset of MNIST test images for both libraries, the same sigma, ``n0``,
``n``, ``alpha`` and forward batch size.

* shieldkit: ``RandomizedSmoothing(sigma, seed=0).certify(model, x, n0=, n=, alpha=, batch_size=)``.
* ART: ``PyTorchRandomizedSmoothing(model, ..., sample_size=n0, scale=sigma, alpha=alpha)
  .certify(x, n=n, batch_size=)``: ``sample_size`` draws choose the class, ``n`` estimate it.
  ART takes its Clopper-Pearson bound from statsmodels (``proportion_confint(k, n,
  alpha=2 * alpha, method="beta")[0]``, i.e. ``scipy.stats.beta.ppf(alpha, k, n - k + 1)``),
  which shieldkit does not install; without statsmodels the script gives ART's
  estimator that very formula through scipy (said so in the results).
* Shieldkit once more with another seed: the Monte-Carlo spread of two honest
  runs, against which shieldkit-vs-ART differences are judged.

Both certificates turn a vote count ``k`` into a radius by the same monotone map,
so each radius gives back its ``k``; the difference of two independent counts has
standard deviation ``sqrt(2 n p (1 - p))``, and its z-scores should look standard
normal if the two implementations estimate the same probability.

Timing alternates between the libraries over chunks of images so that a burst of
load on a shared machine hits both; the load average before and after is recorded.
Writes a Markdown table to ``bench/results/smoothing.md`` (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SHIELDKIT_DATA", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))

RADII = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="draws that estimate the class probability")
    parser.add_argument("--n0", type=int, default=100, help="draws that select the class")
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--images", type=int, default=100, help="seeded subset of the MNIST test split")
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy images per forward pass (both)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--chunk", type=int, default=25, help="images per alternation between the libraries")
    parser.add_argument("--model", help="a base model saved with torch.save(model) instead of training one")
    parser.add_argument("--train-samples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "smoothing.md"))
    return parser.parse_args(argv)


# ------------------------------------------------------------------ the setting


def base_model(args: argparse.Namespace) -> tuple[torch.nn.Module, str]:
    from shieldkit.data import load
    from shieldkit.defenses.noise_training import NoiseTraining
    from shieldkit.models import mnist_cnn

    if args.model:
        return torch.load(args.model, weights_only=False).eval(), f"`{args.model}`"
    train = load("mnist", split="train").subset(args.train_samples, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mnist_cnn(width=8)
    started = time.perf_counter()
    model = NoiseTraining(sigma=args.sigma).fit(model, train, epochs=args.epochs, batch_size=64, seed=0).eval()
    return model, (f"`mnist_cnn(width=8)` trained by `noise_training:sigma={args.sigma}` on {args.train_samples} "
                   f"seeded MNIST training images, {args.epochs} epochs, batch 64, seed 0 "
                   f"({time.perf_counter() - started:.0f} s)")


def art_estimator(model: torch.nn.Module, args: argparse.Namespace):
    """ART's smoothed classifier, and whether its bound had to come from scipy instead of statsmodels."""
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    estimator = PyTorchRandomizedSmoothing(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
        clip_values=(0.0, 1.0), device_type="cpu", sample_size=args.n0, scale=args.sigma, alpha=args.alpha)
    try:
        import statsmodels.stats.proportion  # noqa: F401  (what ART imports for its bound)
    except ImportError:
        import scipy.stats

        def lower_confidence_bound(k: int, n: int) -> float:  # statsmodels' "beta" method at 2 * alpha, lower end
            return float(scipy.stats.beta.ppf(args.alpha, k, n - k + 1)) if k > 0 else 0.0

        estimator._lower_confidence_bound = lower_confidence_bound
        return estimator, True
    return estimator, False


# --------------------------------------------------------------------- running


def run_all(model, x: torch.Tensor, args: argparse.Namespace, estimator):
    """Certify with shieldkit (seeds 0 and 1) and ART, alternating over chunks; predictions, radii and seconds."""
    from shieldkit.defenses.randomized_smoothing import RandomizedSmoothing

    runs = {"shieldkit": RandomizedSmoothing(sigma=args.sigma, seed=0),
            "shieldkit seed 1": RandomizedSmoothing(sigma=args.sigma, seed=1)}
    np.random.seed(0)  # ART draws its noise from numpy's global RNG
    out = {name: ([], [], 0.0) for name in (*runs, "art")}
    for start in range(0, len(x), args.chunk):
        chunk = x[start:start + args.chunk]
        for name, defense in runs.items():
            certificate = defense.certify(model, chunk, n0=args.n0, n=args.n, alpha=args.alpha,
                                          batch_size=args.batch_size)
            predictions, radii, seconds = out[name]
            out[name] = (predictions + certificate.predictions.tolist(), radii + certificate.radii.tolist(),
                         seconds + certificate.seconds)
        started = time.perf_counter()
        with torch.no_grad():
            predictions, radii = estimator.certify(chunk.numpy(), n=args.n, batch_size=args.batch_size)
        seconds = time.perf_counter() - started
        old = out["art"]
        out["art"] = (old[0] + predictions.astype(int).tolist(), old[1] + radii.astype(float).tolist(),
                      old[2] + seconds)
        print(f"  {start + len(chunk)}/{len(x)} images", flush=True)
    return {name: (torch.tensor(p), torch.tensor(r, dtype=torch.float64), s) for name, (p, r, s) in out.items()}


# -------------------------------------------------------------------- analysis


def count_table(args: argparse.Namespace) -> np.ndarray:
    """The radius each vote count ``k = 0..n`` certifies (0 below the threshold): the map both libraries use."""
    import scipy.stats

    k = np.arange(args.n + 1)
    with np.errstate(invalid="ignore"):
        p_lower = np.where(k > 0, scipy.stats.beta.ppf(args.alpha, k, args.n - k + 1), 0.0)
    return np.where(p_lower > 0.5, args.sigma * scipy.stats.norm.ppf(np.minimum(p_lower, 1 - 1e-12)), 0.0)


def counts_of(radii: torch.Tensor, table: np.ndarray) -> np.ndarray:
    """The vote count behind each certified radius (the nearest entry of the table; entries are >= 5e-4 apart)."""
    positive = np.flatnonzero(table > 0)
    return positive[np.abs(table[positive][None, :] - radii.numpy()[:, None]).argmin(axis=1)]


def compare(reference, other, table: np.ndarray, args: argparse.Namespace) -> dict:
    """Agreement of two certificates and the statistics of their radius and count differences."""
    (p1, r1, _), (p2, r2, _) = reference, other
    both = (p1 == p2) & (p1 != -1)
    k1, k2 = counts_of(r1[both], table), counts_of(r2[both], table)
    p = (k1 + k2 + 1) / (2 * args.n + 2)
    z = (k1 - k2) / np.sqrt(2 * args.n * p * (1 - p))
    d = (r1 - r2)[both].numpy()
    return {
        "same": int((p1 == p2).sum()), "both_certified": int(both.sum()),
        "both_abstain": int(((p1 == -1) & (p2 == -1)).sum()),
        "one_abstains": int(((p1 == -1) ^ (p2 == -1)).sum()),
        "different_class": int(((p1 != p2) & (p1 != -1) & (p2 != -1)).sum()),
        "mean_d": float(d.mean()), "sd_d": float(d.std(ddof=1)), "median_abs_d": float(np.median(np.abs(d))),
        "p95_abs_d": float(np.quantile(np.abs(d), 0.95)), "max_abs_d": float(np.abs(d).max()),
        "mean_z": float(z.mean()), "sd_z": float(z.std(ddof=1)), "over_3": int((np.abs(z) > 3).sum()),
        "max_abs_z": float(np.abs(z).max()),
        # saturated images (nearly every vote for the class) have z = 0 or tiny: the spread shows on the others
        "unsaturated": int((p < 0.99).sum()), "sd_z_unsaturated": float(z[p < 0.99].std(ddof=1))
        if (p < 0.99).sum() > 1 else float("nan"),
    }


def certified_accuracy(run, y: torch.Tensor) -> list[float]:
    predictions, radii, _ = run
    correct = (predictions == y) & (predictions != -1)
    return [float((correct & (radii >= r)).float().mean()) for r in RADII]


# ------------------------------------------------------------------------ main


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from shieldkit.data import load
    from shieldkit.version import __version__

    load_before = os.getloadavg()
    model, model_text = base_model(args)
    test = load("mnist", split="test").subset(args.images, seed=1)
    with torch.no_grad():
        base_clean = float((model(test.x).argmax(dim=1) == test.y).float().mean())
    estimator, substituted = art_estimator(model, args)
    runs = run_all(model, test.x, args, estimator)
    load_after = os.getloadavg()

    import art

    table = count_table(args)
    versus_art = compare(runs["shieldkit"], runs["art"], table, args)
    versus_seed = compare(runs["shieldkit"], runs["shieldkit seed 1"], table, args)
    draws = args.images * (args.n0 + args.n)
    ceiling = float(table.max())
    cpus = os.cpu_count()
    disturbed = load_before[0] >= 0.5  # other processes were running before this one started
    command = "SHIELDKIT_DATA=../shared/data .venv/bin/python bench/bench_smoothing.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)

    lines = [
        "# Randomised smoothing: shieldkit vs ART",
        "",
        f"Written by `bench/bench_smoothing.py` on {time.strftime('%Y-%m-%d %H:%M')}:",
        "",
        f"    {command.strip()}",
        "",
        f"- base model: {model_text}; accuracy of the base model on the clean images {100 * base_clean:.1f}%",
        f"- {args.images} seeded MNIST test images (`load('mnist', split='test').subset({args.images}, seed=1)`), "
        f"sigma = {args.sigma}, n0 = {args.n0}, n = {args.n}, alpha = {args.alpha}, forward batch "
        f"{args.batch_size} noisy images for both",
        f"- shieldkit {__version__}, ART {art.__version__}, torch {torch.__version__}, {args.threads} torch "
        f"thread(s), {cpus} CPUs ({platform.machine()}), load average {load_before[0]:.1f} before and "
        f"{load_after[0]:.1f} after",
        f"- the largest radius n = {args.n} draws can certify: {ceiling:.3f} (all n votes for the class)",
    ]
    if substituted:
        lines.append("- statsmodels is not installed (shieldkit does not depend on it): ART's "
                     "`_lower_confidence_bound` was given `scipy.stats.beta.ppf(alpha, k, n - k + 1)`, the lower end "
                     "of statsmodels' `proportion_confint(k, n, alpha=2 * alpha, method='beta')` that ART calls")
    if disturbed:
        lines.append(f"- **the machine was shared**: other processes ran beside this one (load average "
                     f"{load_before[0]:.1f} before it started, on {cpus} CPUs), so absolute times are slower and "
                     "noisier than on a quiet machine; the libraries were timed alternately over chunks of "
                     f"{args.chunk} images, so their ratio is the figure to keep")
    lines += [
        "",
        "## Throughput",
        "",
        "| implementation | seconds | images/s | noisy forwards/s | x shieldkit |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in ("shieldkit", "art"):
        seconds = runs[name][2]
        lines.append(f"| {name} | {seconds:.1f} | {args.images / seconds:.2f} | {draws / seconds:.0f} | "
                     f"{seconds / runs['shieldkit'][2]:.2f} |")
    lines += [
        "",
        "## Certified accuracy (prediction = label, not abstained, radius >= r)",
        "",
        "| implementation | " + " | ".join(f"r={r}" for r in RADII) + " |",
        "| --- |" + " ---: |" * len(RADII),
    ]
    for name in ("shieldkit", "shieldkit seed 1", "art"):
        lines.append(f"| {name} | " + " | ".join(f"{100 * a:.0f}%" for a in certified_accuracy(runs[name],
                                                                                                test.y)) + " |")
    lines += [
        "",
        "## Agreement and radius differences",
        "",
        "Pairs: shieldkit (seed 0) vs ART, and vs shieldkit itself with seed 1 (the Monte-Carlo spread of two "
        "honest runs). d = radius difference on the images both certify with the same class; z = difference of "
        "the two vote counts k over its standard deviation sqrt(2 n p (1 - p)) (about N(0, 1) if both "
        "estimate the same probability; p pooled). Images whose pooled p is >= 0.99 (nearly all votes for the "
        "class) have k = n or close in both runs and a z of 0 or nearly so, which pulls sd z below 1; the last "
        "two columns give the images with p < 0.99 and their sd z, the one to compare with 1.",
        "",
        "| pair | same prediction | both certify | both abstain | one abstains | other class | mean d | sd d | "
        "median abs d | p95 abs d | max abs d | mean z | sd z | abs z > 3 | max abs z | p < 0.99 | sd z there |",
        "| --- |" + " ---: |" * 16,
    ]
    for name, c in (("vs ART", versus_art), ("vs shieldkit seed 1", versus_seed)):
        lines.append(
            f"| {name} | {c['same']}/{args.images} | {c['both_certified']} | {c['both_abstain']} | "
            f"{c['one_abstains']} | {c['different_class']} | {c['mean_d']:+.4f} | {c['sd_d']:.4f} | "
            f"{c['median_abs_d']:.4f} | {c['p95_abs_d']:.4f} | {c['max_abs_d']:.4f} | {c['mean_z']:+.2f} | "
            f"{c['sd_z']:.2f} | {c['over_3']} | {c['max_abs_z']:.2f} | {c['unsaturated']} | "
            f"{c['sd_z_unsaturated']:.2f} |")
    lines += [
        "",
        "## How ART differs",
        "",
        "- Same algorithm (Cohen et al.'s CERTIFY): `sample_size` draws choose the class by plurality, `n` fresh "
        "draws count its votes, a one-sided Clopper-Pearson lower bound at 1 - alpha (statsmodels' two-sided "
        "'beta' interval at 2 alpha) gives p_A and the radius sigma * Phi^-1(p_A). Both add unclipped Gaussian "
        "noise and vote with the base model's argmax.",
        "- Abstention: ART abstains (-1, radius 0) when p_A < 0.5, shieldkit when p_A <= 0.5: they differ only "
        "at p_A = 0.5 exactly. ART's `predict` (PREDICT) abstains by returning an all-zero row, not -1, and "
        "only when `is_abstain=True` (its default).",
        "- Noise: ART draws float64 noise from numpy's global RNG (no seed of its own) and casts to float32, "
        "one image at a time; shieldkit draws float32 noise from its own seeded torch generator, in blocks "
        "independent of the batch size, with images and draws flattened into full forward batches.",
        "- ART certifies one image at a time (two forward calls per image at batch >= n); shieldkit fills every "
        "forward batch across images. ART's statsmodels bound is a dependency shieldkit does not install; "
        "shieldkit bisects the exact binomial tail in torch (matches scipy's Beta quantile to 1e-6, "
        "tests/component/test_smoothing.py).",
        "- With count 0 for the chosen class statsmodels returns 0 (shieldkit too); a NaN there would have "
        "slipped past ART's `prob_class < 0.5` test, which is why the substitute returns 0.",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
