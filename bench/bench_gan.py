"""The figures tests/component/test_gan.py guards, measured in the tests' own settings, with their standard errors.

    SHIELDKIT_DATA=../shared/data OMP_NUM_THREADS=1 python bench/bench_gan.py            # about 10 minutes
    SHIELDKIT_DATA=../shared/data python bench/bench_gan.py --skip-enhanced              # without Enhanced INC

Writes bench/results/gan.md. Same models, images, seeds and settings as the tests
(VAE 4,000 steps, ``mnist_cnn`` one epoch on 60,000 images, ``subset(300, seed=0)``
of the test split, the same starting latents), so each figure is the value the
test computes. Each comes with its standard error on the test's n images:

- a proportion p: the binomial ``sqrt(p (1 - p) / n)``;
- a change of accuracy on the same images (paired): the standard error of the
  per-image change d in {-1, 0, 1}, ``sqrt((r + l - (r - l)^2) / n)`` with r the
  share of images gained and l the share lost (with l = 0 it is the binomial
  standard error of r);
- a mean: ``std / sqrt(n)``; a ratio of means: the delta method;
- a ROC-AUC: Hanley and McNeil (1982).

The tests' thresholds are the figure minus the margin written in the table (3
standard errors unless the table says 2).
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path

import torch

import shieldkit as sk
from shieldkit.data import load
from shieldkit.gan import (
    VAE,
    DCGANGenerator,
    EnhancedINC,
    latent_attack,
    pretrained_generator,
    project,
    train_generator,
)
from shieldkit.models import fit_classifier, mnist_cnn, pretrained

RESULTS = Path(__file__).resolve().parent / "results" / "gan.md"
N_TEST = 300
VAE_STEPS = 4000


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def correct(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def paired(before: torch.Tensor, after: torch.Tensor) -> tuple[float, float, float, float]:
    """Change of accuracy from ``before`` to ``after`` (per-image correctness): change, its SE, gained, lost."""
    n = before.numel()
    gained = (after & ~before).float().mean().item()
    lost = (before & ~after).float().mean().item()
    change = gained - lost
    return change, math.sqrt(max(gained + lost - change**2, 0.0) / n), gained, lost


def mean_se(values: torch.Tensor) -> float:
    return values.std().item() / math.sqrt(values.numel())


def ratio_se(a: torch.Tensor, b: torch.Tensor) -> float:
    """Delta-method standard error of mean(a) / mean(b), a and b paired per image."""
    n, ma, mb = a.numel(), a.mean().item(), b.mean().item()
    va, vb = a.var().item(), b.var().item()
    cov = ((a - ma) * (b - mb)).sum().item() / (n - 1)
    ratio = ma / mb
    return ratio * math.sqrt((va / ma**2 + vb / mb**2 - 2 * cov / (ma * mb)) / n)


def roc_auc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    greater = (positives[:, None] > negatives[None, :]).float().mean()
    ties = (positives[:, None] == negatives[None, :]).float().mean()
    return (greater + 0.5 * ties).item()


def auc_se(auc: float, n_negative: int, n_positive: int) -> float:
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc**2) + (n_negative - 1) * (q2 - auc**2))
    return math.sqrt(max(variance, 0.0) / (n_negative * n_positive))


class Table:
    def __init__(self):
        self.rows: list[tuple[str, ...]] = []

    def add(self, test: str, claim: str, n: int, figure: float, se: float, kind: str, scale: float = 100.0,
            unit: str = "%", k: int = 3, digits: int = 1, upper: bool = False) -> None:
        """``upper``: the test bounds the figure from above, so the margin is added."""
        floor = figure + k * se if upper else figure - k * se
        fmt = f"{{:.{digits}f}}{unit}"
        self.rows.append((test, claim, str(n), fmt.format(figure * scale), fmt.format(se * scale), kind,
                          f"{'+' if upper else '-'}{k} SE: {fmt.format(floor * scale)}"))
        print(f"{claim}: {fmt.format(figure * scale)} (SE {fmt.format(se * scale)}, {kind}; "
              f"bound {fmt.format(floor * scale)})", flush=True)


def dcgan(table: Table, test) -> None:
    """test_dcgan_moves_its_samples_toward_the_data_brightness: 30 steps at lr 2e-3, seed 0, 1,024 test images."""
    data = test.subset(1024, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        initial = DCGANGenerator().eval()
    trained = train_generator("dcgan", data, steps=30, lr=2e-3, seed=0)
    latents = torch.randn(256, 100, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before, after = initial(latents), trained(latents)
    target = data.x.mean().item()
    gap_before = (before.mean(dim=(1, 2, 3)) - target).abs()
    gap_after = (after.mean(dim=(1, 2, 3)) - target).abs()
    print(f"DCGAN: data mean {target:.3f}; sample mean {before.mean():.3f} untrained -> {after.mean():.3f} after 30 steps")
    table.add("dcgan", "DCGAN, 30 steps at lr 2e-3: mean distance of the sample brightness to the data's, over the untrained one's", 256,
              gap_after.mean().item() / gap_before.mean().item(), ratio_se(gap_after, gap_before), "delta method",
              scale=1, unit="", digits=3, upper=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-enhanced", action="store_true", help="leave out Enhanced INC (the slowest part)")
    parser.add_argument("--only", choices=("dcgan",), help="measure one section and replace its rows in --out")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    table = Table()
    if args.only == "dcgan":
        dcgan(table, load("mnist", split="test"))
        kept = [line for line in args.out.read_text().splitlines() if not line.startswith("| dcgan |")]
        end = max(i for i, line in enumerate(kept) if line.startswith("|")) + 1  # after the table's last row
        kept[end:end] = ["| " + " | ".join(row) + " |" for row in table.rows]
        note = f"The dcgan row: `python bench/bench_gan.py --only dcgan`, {time.perf_counter() - started:.0f} s."
        kept = [line for line in kept if not line.startswith("The dcgan row:")] + ["", note]
        args.out.write_text("\n".join(kept) + "\n")
        print(f"updated {args.out}")
        return
    cache = Path(tempfile.mkdtemp(prefix="bench-gan-"))
    generator = pretrained_generator("vae", "mnist", steps=VAE_STEPS, cache_dir=cache)
    classifier = pretrained("mnist_cnn", data="mnist", epochs=1, cache_dir=cache, seed=0).eval()
    test = load("mnist", split="test")
    subset = test.subset(N_TEST, seed=0)
    x, y = subset.x, subset.y
    print(f"models ready ({time.perf_counter() - started:.0f} s)", flush=True)

    # -- test_vae_samples_look_like_digits (200 samples)
    samples = generator.sample(200, generator=torch.Generator().manual_seed(1))
    untrained = VAE().sample(200, generator=torch.Generator().manual_seed(1))
    reference = load("mnist", split="train").subset(5000, seed=0).x.flatten(1)
    real = test.subset(200, seed=3).x

    def nearest(images):
        return torch.cdist(images.flatten(1), reference).min(dim=1).values

    near_s, near_r, near_u = nearest(samples), nearest(real), nearest(untrained)
    with torch.no_grad():
        confidence, classes = classifier(samples).softmax(1).max(1)
        untrained_confidence = classifier(untrained).softmax(1).max(1).values
    print(f"nearest-neighbour medians: samples {near_s.median():.2f}, real {near_r.median():.2f}, "
          f"untrained {near_u.median():.2f}; largest class share {torch.bincount(classes, minlength=10).max() / 200:.2f}")
    ratio_s = near_s.median().item() / near_r.median().item()
    ratio_u = near_u.median().item() / near_r.median().item()
    table.add("vae_samples", "median NN distance, samples / real test digits", 200, ratio_s, 0.0,
              "ratio of medians (no SE: upper bound 1.2 kept)", scale=1, unit="", digits=2, k=0)
    table.add("vae_samples", "median NN distance, untrained VAE / real test digits", 200, ratio_u, 0.0,
              "ratio of medians (no SE: lower bound 2 kept)", scale=1, unit="", digits=2, k=0)
    p = (confidence > 0.5).float().mean().item()
    table.add("vae_samples", "samples classified with confidence > 0.5", 200, p, binomial_se(p, 200), "binomial")
    p = torch.bincount(classes, minlength=10).max().item() / 200
    table.add("vae_samples", "largest share of one class among the samples (an upper bound)", 200, p,
              binomial_se(p, 200), "binomial", upper=True)
    p = (untrained_confidence > 0.5).float().mean().item()
    table.add("vae_samples", "untrained VAE samples with confidence > 0.5 (an upper bound)", 200, p,
              binomial_se(max(p, 1 / 200), 200), "binomial (p at least 1/n)", upper=True)

    # -- the projections (test_projection_recovers_accuracy, ..._detects_fgsm, fewer restarts)
    fgsm = {eps: sk.create_attack("fgsm", eps=eps)(classifier, x, y) for eps in (0.1, 0.3)}
    z_init = torch.randn(3 * N_TEST, 10, generator.latent_dim, generator=torch.Generator().manual_seed(0))
    z_init = z_init / generator.latent_dim**0.5
    result = project(generator, torch.cat([x, fgsm[0.1], fgsm[0.3]]), z_init=z_init)
    images = {name: result.images[i * N_TEST:(i + 1) * N_TEST] for i, name in enumerate(("clean", 0.1, 0.3))}
    errors = {name: result.error[i * N_TEST:(i + 1) * N_TEST] for i, name in enumerate(("clean", 0.1, 0.3))}
    print(f"projections done ({time.perf_counter() - started:.0f} s)", flush=True)
    clean_projected = correct(classifier, images["clean"], y)
    p = clean_projected.float().mean().item()
    table.add("projection_recovers", "clean accuracy after projection", N_TEST, p, binomial_se(p, N_TEST), "binomial")
    for eps in (0.1, 0.3):
        before, after = correct(classifier, fgsm[eps], y), correct(classifier, images[eps], y)
        change, se, gained, lost = paired(before, after)
        print(f"FGSM {eps}: undefended {before.float().mean():.1%} -> projected {after.float().mean():.1%}; "
              f"gained {gained:.1%}, lost {lost:.1%}")
        table.add("projection_recovers", f"FGSM eps={eps}: projected minus undefended accuracy (points)", N_TEST,
                  change, se, "paired")

    one = project(generator, x, restarts=1, z_init=z_init[:N_TEST, :1])
    slow = project(generator, x, restarts=1, lr=0.1, z_init=z_init[:N_TEST, :1])
    worse_by = one.error / errors["clean"] - 1
    table.add("fewer_restarts", "R=1: mean relative increase of the reconstruction error", N_TEST,
              worse_by.mean().item(), mean_se(worse_by), "mean", digits=2)
    p = (worse_by > 0.01).float().mean().item()
    table.add("fewer_restarts", "R=1: share of images more than 1% worse", N_TEST, p, binomial_se(p, N_TEST),
              "binomial")
    table.add("fewer_restarts", "lr 0.1: mean error / mean error at lr 10 (R=1)", N_TEST,
              slow.error.mean().item() / one.error.mean().item(), ratio_se(slow.error, one.error), "delta method",
              scale=1, unit="x", digits=2)
    change, se, _, _ = paired(correct(classifier, one.images, y), correct(classifier, slow.images, y))
    table.add("fewer_restarts", "lr 0.1: accuracy lost against lr 10 (R=1) (points)", N_TEST, -change, se, "paired")

    auc = roc_auc(errors["clean"], errors[0.3])
    table.add("detects_fgsm", "ROC-AUC of the projection error, clean vs FGSM 0.3", 2 * N_TEST, auc,
              auc_se(min(auc, 1 - 1 / N_TEST), N_TEST, N_TEST), "Hanley-McNeil (AUC at most 1 - 1/n)", scale=1,
              unit="", digits=3)
    detector = sk.create_defense("reconstruction_error", generator=generator, steps=100, restarts=4)
    detector.fit(classifier, x[:100], fpr=0.05)
    p = detector.detect(classifier, x[100:200]).float().mean().item()
    table.add("detects_fgsm", "detector at 5% FPR (fit on 100 clean): clean images flagged (an upper bound)", 100,
              p, binomial_se(max(p, 0.05), 100), "binomial (p at least 5%)", upper=True)
    p = detector.detect(classifier, fgsm[0.3][100:200]).float().mean().item()
    table.add("detects_fgsm", "detector at 5% FPR: FGSM 0.3 images flagged", 100, p,
              binomial_se(max(min(p, 0.99), 0.01), 100), "binomial (p clipped to 0.99)")

    # -- the attacks on INC
    inc = sk.create_defense("inc", generator=generator, seed=0).wrap(classifier)
    with torch.no_grad():
        hit = inc(x[:70]).argmax(1) == y[:70]
    xi, yi = x[:70][hit][:60], y[:70][hit][:60]
    attack = sk.create_attack("overpowered", eps=3.9, seed=0).run(inc, xi, yi)
    p = attack.success_rate
    print(f"overpowered: {p:.1%} fooled of {len(yi)}, median L2 {attack.l2.median():.2f}, max {attack.l2.max():.3f}")
    table.add("latent_space_attack", "overpowered eps=3.9 on INC: correctly classified images fooled", len(yi), p,
              binomial_se(p, len(yi)), "binomial")

    x40, y40 = x[:40], y[:40]
    inc_fast = sk.create_defense("inc", generator=generator, steps=50, restarts=2, seed=0).wrap(classifier)
    common = {"eps": 0.3, "steps": 10, "step_size": 0.05, "seed": 0}
    transferred = sk.create_attack("pgd", **common)(classifier, x40, y40)
    transfer_correct = correct(inc_fast, transferred, y40)
    adaptive = sk.create_attack("bpda_pgd", **common).run(inc_fast, x40, y40)
    change, se, gained, lost = paired(transfer_correct, ~adaptive.success)
    print(f"INC under transferred PGD {transfer_correct.float().mean():.1%}, under BPDA-PGD "
          f"{1 - adaptive.success_rate:.1%}")
    table.add("bpda_pgd_beats_transferred", "INC accuracy: transferred PGD minus BPDA-PGD (points)", 40, -change, se,
              "paired")

    if not args.skip_enhanced:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            network = mnist_cnn(width=8)
        narrow = fit_classifier(network, load("mnist", split="train").subset(10000, seed=0), epochs=1, seed=0).eval()
        train = load("mnist", split="train").subset(2048, seed=1)
        trainer = EnhancedINC(generator=generator, attack_steps=20, projection_steps=50, projection_restarts=2)
        robust = trainer.fit(narrow, train, epochs=2, batch_size=64, lr=1e-3, seed=0)
        print(f"Enhanced INC trained ({time.perf_counter() - started:.0f} s)", flush=True)
        for n in (100, N_TEST):
            xe, ye = x[:n], y[:n]
            z0 = project(generator, xe, steps=100, restarts=4, rng=torch.Generator().manual_seed(0)).z
            defence = sk.create_defense("inc", generator=generator, seed=0)
            projected = defence(xe)
            under, clean = {}, {}
            for name, model in (("plain", narrow), ("enhanced", robust)):
                adversarial, _ = latent_attack(model, generator, xe, ye, z0, eps=3.9, steps=100)
                under[name] = correct(model, defence(adversarial), ye)
                clean[name] = correct(model, projected, ye)
            change, se, gained, lost = paired(under["plain"], under["enhanced"])
            print(f"n={n}: INC under the latent attack {under['plain'].float().mean():.1%} -> "
                  f"{under['enhanced'].float().mean():.1%} (gained {gained:.1%}, lost {lost:.1%}); clean INC "
                  f"{clean['plain'].float().mean():.1%} -> {clean['enhanced'].float().mean():.1%}")
            table.add("enhanced_inc", f"INC accuracy under the latent attack, enhanced minus plain (points, "
                      f"first {n} images)", n, change, se, "paired", k=2)
            change, se, _, _ = paired(clean["plain"], clean["enhanced"])
            table.add("enhanced_inc", f"clean INC accuracy, enhanced minus plain (points, first {n} images)", n,
                      change, se, "paired")

    dcgan(table, test)

    where = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    lines = [
        "# GAN-inversion: the figures tests/component/test_gan.py guards",
        "",
        f"`python bench/bench_gan.py{' --skip-enhanced' if args.skip_enhanced else ''}` on {where}, "
        f"torch {torch.__version__}, {time.perf_counter() - started:.0f} s. The tests' models, images, seeds and "
        "settings; SE is the standard error on the test's n (binomial for a proportion, paired per-image change "
        "for a change of accuracy on the same images, std/sqrt(n) for a mean, delta method for a ratio, "
        "Hanley-McNeil for a ROC-AUC; see the script's docstring). The last column is the figure minus the "
        "margin the test allows (for an upper bound, plus); a test's threshold is never looser than it.",
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
