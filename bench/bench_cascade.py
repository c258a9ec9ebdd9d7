"""Cascade against full grid: the same worst-case robust accuracy, in less time.

Runs one evaluation twice, with the cascade (later attacks only on samples still
robust) and as a full grid (every attack on every clean-correct sample), and
writes a Markdown table to bench/results/cascade.md.

The attacks are deterministic per sample (FGSM, PGD without random start,
DeepFool, the semantic attack), so the worst case per sample must agree exactly;
with randomised attacks (random starts, noise) the draws depend on which samples
share a batch, and the two agree only up to that noise.

Usage:
    python bench/bench_cascade.py [--data mnist] [--n 300] [--threads 2] [--repeats 2]
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

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist", help="mnist (needs $SHIELDKIT_DATA) or digits")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best is reported")
    parser.add_argument("--out", default=str(HERE / "results" / "cascade.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from shieldkit.data import load
    from shieldkit.evaluation import evaluate
    from shieldkit.models.cache import pretrained

    options = {"n_train": 20000} if args.data == "mnist" else {"epochs": 4}
    model = pretrained("mnist_cnn", data=args.data, **options).eval()
    data = load(args.data, split="test")
    suite = dict(
        attacks=["fgsm", ("pgd", {"steps": 20, "random_start": False}), ("deepfool", {"steps": 20}), "semantic"],
        defenses=["none", "jpeg", "bit_depth"],
        eps=[0.1, 0.2, 0.3], n=args.n, batch_size=100, quiet=True, checks=False,
    )
    runs: dict[str, list] = {"cascade": [], "full grid": []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):  # alternate the two, so that load on a shared machine hits both
            for name, cascade in (("cascade", True), ("full grid", False)):
                wall, cpu = time.perf_counter(), time.process_time()
                report = evaluate(model, data, out_dir=Path(folder) / f"{name.replace(' ', '-')}-{repeat}",
                                  cascade=cascade, **suite)
                runs[name].append((report, time.perf_counter() - wall, time.process_time() - cpu))
                print(f"{name} #{repeat}: {runs[name][-1][1]:.1f} s wall, {runs[name][-1][2]:.1f} s CPU",
                      file=sys.stderr)
    runs = {name: (results[0][0], min(r[1] for r in results), min(r[2] for r in results))
            for name, results in runs.items()}
    cascade, cascade_seconds, cascade_cpu = runs["cascade"]
    full, full_seconds, full_cpu = runs["full grid"]
    lines = [
        "# Cascade against full grid",
        "",
        f"`python bench/bench_cascade.py --data {args.data} --n {args.n} --threads {args.threads}` on "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"{os.cpu_count()} CPUs visible (shared machine: absolute times are noisy, the ratio less so).",
        "",
        "Suite: FGSM, PGD (20 steps, no random start), DeepFool (20 steps), semantic; naive and adaptive; "
        "model `mnist_cnn`. Robust accuracy (%) is the worst case per sample.",
        "",
        "| defence | eps | naive cascade | naive full | adaptive cascade | adaptive full | equal |",
        "|---|---|---|---|---|---|---|",
    ]
    all_equal = True
    for defense in suite["defenses"]:
        for eps in suite["eps"]:
            values = [cascade.robust_accuracy(defense, eps, "naive"), full.robust_accuracy(defense, eps, "naive"),
                      cascade.robust_accuracy(defense, eps, "adaptive"), full.robust_accuracy(defense, eps, "adaptive")]
            equal = values[0] == values[1] and values[2] == values[3]
            all_equal &= equal
            lines.append(f"| {defense} | {eps:g} | " + " | ".join(f"{100 * v:.1f}" for v in values)
                         + f" | {'yes' if equal else 'NO'} |")
    attack_cascade = cascade.summary["time"]["attack_seconds"]
    attack_full = full.summary["time"]["attack_seconds"]
    lines += [
        "",
        f"Best of {args.repeats} alternating runs each:",
        "",
        "| run | CPU s | wall-clock s | attack s (wall) | attacked samples |",
        "|---|---|---|---|---|",
        f"| cascade | {cascade_cpu:.1f} | {cascade_seconds:.1f} | {attack_cascade:.1f} | {_attacked(cascade)} |",
        f"| full grid | {full_cpu:.1f} | {full_seconds:.1f} | {attack_full:.1f} | {_attacked(full)} |",
        "",
        f"Worst-case accuracies identical: **{'yes' if all_equal else 'no'}**. The cascade used "
        f"{100 * (1 - cascade_cpu / full_cpu):.0f}% less CPU time ({full_cpu / cascade_cpu:.2f}x) and "
        f"{100 * (1 - cascade_seconds / full_seconds):.0f}% less wall-clock time, attacking "
        f"{100 * (1 - _attacked(cascade) / _attacked(full)):.0f}% fewer samples. Its own estimate of the "
        "full grid's attack time (per-sample cost of each unit times the samples the full grid attacks) was "
        f"{cascade.summary['time']['estimated_full_grid_seconds']:.1f} s (measured: {attack_full:.1f} s).",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if all_equal else 1


def _attacked(report) -> int:
    return sum(a["attacked"] for d in report.summary["defenses"] for e in d["eps"].values() for a in e["attacks"])


if __name__ == "__main__":
    sys.exit(main())
