"""How far the figures that four tests hold move with the session model's seed and the thread count.

    SHIELDKIT_DATA=../shared/data python bench/bench_threshold_spread.py            # about 25 minutes
    SHIELDKIT_DATA=../shared/data python bench/bench_threshold_spread.py --seeds 0 1 --threads 1

Writes bench/results/threshold_spread.md. A fresh machine trains the tests' session model
(tests/conftest.py ``train_mnist_model``: ``mnist_cnn``, one epoch, 20,000 images) with other CPU
kernels, and its weights come out about as different as another seed's; the attacks then run at
another thread count. So each figure is measured on the model trained under seeds 0-3 (one thread,
deterministic algorithms, as the fixture does) with the attacks at one and two threads, and a test's
bound is set from the worst case across those runs plus the sampling error. Beside each figure the same
measurement of a deliberately weakened attack shows the bound still catches a regression:

- ``deepfool_vs_reference`` (test_attacks_native): on the 300 correctly classified images of the
  first 400, native DeepFool against the test's hand-written DeepFool, per image (fooled by both):
  the median of the per-image ratio of perturbation sizes. Weakened: no projection rounds.
- ``pgd_no_random_start`` (test_backends): L2 PGD (eps 1, step 0.1, 10 steps) without random start,
  per image the largest pixel difference of ART's and torchattacks' result from native's; the share
  of the 64 images within 1e-3 and the largest difference. Weakened: native with step 0.105.
- ``deepfool_across_sources`` (test_backends): DeepFool (50 steps, overshoot 0.02) from the three
  sources on the first 64 test images; per image fooled by all, the ratio native / ART and
  torchattacks / ART, medians. Weakened: native without projection rounds.
- ``autoattack_sources`` (test_backends): robust accuracy (%) of torchattacks' and ART's AutoAttack at
  eps 0.15 on the first 50 test images and the number of images on which they disagree. Weakened:
  ART's AutoAttack with one APGD step instead of ten.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import shieldkit as sk
from shieldkit.attacks import DeepFool
from shieldkit.core.threat import norm_of
from shieldkit.data import load

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "threshold_spread.md"
RAW: list[dict] = []  # per-image figures of the current row, saved with --raw
sys.path.insert(0, str(REPO / "tests"))  # the session model's training and the test's hand-written DeepFool
sys.path.insert(0, str(REPO / "tests" / "component"))  # test_attacks_native\'s helpers

from conftest import train_mnist_model  # noqa: E402
from test_attacks_native import _reference_deepfool  # noqa: E402


def median_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> float:
    return (numerator / denominator).median().item()


def deepfool_vs_reference(model, x, y, norm: str, projections: int | None = None) -> dict:
    attack = DeepFool(norm=norm)
    if projections is not None:
        attack.projections = projections
    result = attack.run(model, x, y)
    reference = _reference_deepfool(model, x, y, norm=norm)
    with torch.no_grad():
        reference_fooled = model(reference).argmax(1) != y
    both = result.success & reference_fooled
    sizes = result.l2 if norm == "l2" else result.linf
    reference_sizes = norm_of(reference - x, norm)
    RAW.append({"test": f"df_ref_{norm}", "projections": projections, "native": sizes, "reference": reference_sizes,
                "both": both})
    return {"median_ratio": median_ratio(sizes[both], reference_sizes[both]),
            "medians_ratio": sizes[result.success].median().item() / reference_sizes[reference_fooled].median().item(),
            "fooled": result.success_rate, "both": int(both.sum())}


def pgd_differences(model, x, y, native_step: float = 0.1) -> dict:
    images = {}
    for source in ("native", "torchattacks", "art"):
        step = native_step if source == "native" else 0.1
        images[source] = sk.create_attack(f"pgd.{source}", eps=1.0, norm="l2", steps=10, step_size=step,
                                          random_start=False)(model, x, y)
    out = {}
    for peer in ("art", "torchattacks"):
        per_image = (images[peer] - images["native"]).flatten(1).abs().amax(1)
        out[peer] = {"max": per_image.max().item(), "within_1e-3": (per_image <= 1e-3).float().mean().item(),
                     "within_1e-2": (per_image <= 1e-2).float().mean().item()}
    return out


def deepfool_sources(model, x, y, projections: int | None = None) -> dict:
    results = {}
    for source in ("native", "torchattacks", "art"):
        attack = sk.create_attack(f"deepfool.{source}", steps=50, overshoot=0.02)
        if projections is not None and source == "native":
            attack.projections = projections
        results[source] = attack.run(model, x, y)
    common = torch.stack([r.success & (r.l2 > 0) for r in results.values()]).all(0)
    RAW.append({"test": "df_sources", "projections": projections, "common": common,
                **{source: r.l2 for source, r in results.items()}})
    return {"common": int(common.sum()),
            "native/art": median_ratio(results["native"].l2[common], results["art"].l2[common]),
            "torchattacks/art": median_ratio(results["torchattacks"].l2[common], results["art"].l2[common]),
            "old native/art": results["native"].l2[common].median().item() / results["art"].l2[common].median().item()}


def autoattack_sources(model, x, y, art_steps: int = 10) -> dict:
    robust = {}
    for source, params in (("torchattacks", {"queries": 300}),
                           ("art", {"steps": art_steps, "restarts": 1, "queries": 300})):
        result = sk.create_attack(f"autoattack.{source}", eps=0.15, seed=0, **params).run(model, x, y)
        robust[source] = ~result.success
    return {"torchattacks": 100 * robust["torchattacks"].float().mean().item(),
            "art": 100 * robust["art"].float().mean().item(),
            "disagree": int((robust["torchattacks"] != robust["art"]).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-autoattack", action="store_true")
    parser.add_argument("--only-autoattack", action="store_true",
                        help="measure AutoAttack only and print its rows (the slowest part: about 4 minutes a row)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--raw", type=Path, default=None, help="also save every per-image figure here (torch.save)")
    args = parser.parse_args()

    test = load("mnist", split="test")
    # with --raw, rows measured by an earlier call are kept and not measured again (the table shows them all)
    rows = torch.load(args.raw, weights_only=False) if args.raw is not None and args.raw.is_file() else []
    done = {(row["seed"], row["threads"]) for row in rows}
    cache = tempfile.mkdtemp(prefix="threshold-spread-")
    for seed in args.seeds:
        if all((seed, threads) in done for threads in args.threads):
            continue
        model = train_mnist_model(cache, seed=seed)
        x400, y400 = test.x[:400], test.y[:400]
        with torch.no_grad():
            correct = model(x400).argmax(1) == y400
        x300, y300 = x400[correct][:300], y400[correct][:300]
        for threads in args.threads:
            if (seed, threads) in done:
                continue
            torch.set_num_threads(threads)
            start = time.perf_counter()
            row = {"seed": seed, "threads": threads}
            if args.only_autoattack:
                row["aa"] = autoattack_sources(model, test.x[:50], test.y[:50])
                row["aa_weak"] = autoattack_sources(model, test.x[:50], test.y[:50], art_steps=1)
                print(row, flush=True)
                continue
            for norm in ("l2", "linf"):
                row[f"df_ref_{norm}"] = deepfool_vs_reference(model, x300, y300, norm)
                row[f"df_ref_{norm}_weak"] = deepfool_vs_reference(model, x300, y300, norm, projections=0)
            row["pgd"] = pgd_differences(model, test.x[:64], test.y[:64])
            row["pgd_weak"] = pgd_differences(model, test.x[:64], test.y[:64], native_step=0.105)
            row["df_sources"] = deepfool_sources(model, test.x[:64], test.y[:64])
            row["df_sources_weak"] = deepfool_sources(model, test.x[:64], test.y[:64], projections=0)
            if not args.skip_autoattack:
                row["aa"] = autoattack_sources(model, test.x[:50], test.y[:50])
                row["aa_weak"] = autoattack_sources(model, test.x[:50], test.y[:50], art_steps=1)
            row["seconds"] = time.perf_counter() - start
            row["raw"] = list(RAW)
            RAW.clear()
            rows.append(row)
            if args.raw is not None:
                torch.save(rows, args.raw)
            print({k: v for k, v in row.items() if k != 'raw'}, flush=True)
    if not args.only_autoattack:
        write(sorted(rows, key=lambda row: (row["seed"], row["threads"])), args)


def geometric(sizes: torch.Tensor, reference: torch.Tensor) -> str:
    """The geometric mean of ``sizes / reference`` with its standard error (delta method on the log)."""
    logs = (sizes / reference).log()
    mean = logs.mean().exp().item()
    return f"{mean:.3f} ± {mean * logs.std().item() / len(logs) ** 0.5:.3f}"


def _raw(row: dict, test: str, projections=None) -> dict:
    return next(r for r in row["raw"] if r["test"] == test and r["projections"] == projections)


def write(rows: list[dict], args) -> None:
    lines = [
        "# The spread of four tests' figures across session-model seeds and thread counts",
        "",
        f"`python bench/bench_threshold_spread.py --raw FILE` (seeds and threads as in the rows; the AutoAttack "
        f"rows with `--only-autoattack`) on {platform.machine()}, torch {torch.__version__}. The model is "
        "tests/conftest.py's `train_mnist_model` under each seed (one thread, deterministic algorithms); 'weak' is "
        "the same measurement of a deliberately weakened attack (see the script's docstring). A figure ± its "
        "standard error on the test's images.",
        "",
        "## DeepFool against the hand-written reference (300 images)",
        "",
        "Geometric mean over the images both fool of native's perturbation size over the reference's; 'weak': "
        "native without its projection rounds. The test holds L2 <= 1.01 and L-inf <= 1.07.",
        "",
        "| seed | threads | L2 | L2 weak | L-inf | L-inf weak | L2 ratio of medians | L-inf ratio of medians |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = []
        for norm in ("l2", "linf"):
            for projections in (None, 0):
                raw = _raw(r, f"df_ref_{norm}", projections)
                both = raw["both"]
                cells.append(geometric(raw["native"][both], raw["reference"][both]))
        lines.append(f"| {r['seed']} | {r['threads']} | {' | '.join(cells)} | {r['df_ref_l2']['medians_ratio']:.3f} | "
                     f"{r['df_ref_linf']['medians_ratio']:.3f} |")
    lines += ["", "## L2 PGD without random start (64 images; per image the largest pixel difference from native)",
              "", "'weak': native with a step 5% too long. The test holds 90% of images within 1e-3 and all within "
              "1e-2.", "",
              "| seed | threads | ART max | ART share <= 1e-3 | torchattacks max | torchattacks share <= 1e-3 | "
              "weak max | weak share <= 1e-3 | weak share <= 1e-2 |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p, w = r["pgd"], r["pgd_weak"]
        lines.append(f"| {r['seed']} | {r['threads']} | {p['art']['max']:.2e} | {p['art']['within_1e-3']:.3f} | "
                     f"{p['torchattacks']['max']:.2e} | {p['torchattacks']['within_1e-3']:.3f} | "
                     f"{w['art']['max']:.2e} | {w['art']['within_1e-3']:.3f} | {w['art']['within_1e-2']:.3f} |")
    lines += ["", "## DeepFool across sources (first 64 images; per image fooled by all three)", "",
              "Geometric mean of per-image L2 size ratios; 'weak': native without its projection rounds. The test "
              "holds native / ART <= 1.06 and torchattacks / ART within 5%.", "",
              "| seed | threads | images | native / ART | torchattacks / ART | weak native / ART | "
              "native / ART ratio of medians |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        raw, weak = _raw(r, "df_sources"), _raw(r, "df_sources", 0)
        c, cw = raw["common"], weak["common"]
        lines.append(f"| {r['seed']} | {r['threads']} | {int(c.sum())} | {geometric(raw['native'][c], raw['art'][c])} | "
                     f"{geometric(raw['torchattacks'][c], raw['art'][c])} | "
                     f"{geometric(weak['native'][cw], weak['art'][cw])} | {r['df_sources']['old native/art']:.3f} |")
    with_aa = [r for r in rows if "aa" in r]
    if with_aa:
        lines += ["", "## AutoAttack, torchattacks against ART (50 images, eps 0.15)", "",
                  "Robust accuracy (%) and the images on which they disagree; 'weak': ART's AutoAttack with one APGD "
                  "step instead of ten. The test holds at most 8 images and 12 points apart.", "",
                  "| seed | threads | torchattacks | ART | disagree | weak ART | weak: disagree |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in with_aa:
            a, w = r["aa"], r["aa_weak"]
            lines.append(f"| {r['seed']} | {r['threads']} | {a['torchattacks']:.0f} | {a['art']:.0f} | "
                         f"{a['disagree']} | {w['art']:.0f} | {w['disagree']} |")
    lines.append("")
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
