"""Matplotlib figures of the report (Agg backend, imported lazily), drawn from the typed summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from shieldkit.evaluation.examples import load_clean_examples, load_examples
from shieldkit.evaluation.records import eps_label
from shieldkit.evaluation.summaries import RunSummary


def pyplot():
    """matplotlib's pyplot on the Agg backend (``ImportError`` without shieldkit[report])."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def robust_vs_eps(summary: RunSummary, path: Path) -> Path:
    """One panel per defence: naive (dashed) and adaptive (solid) accuracy against eps, clean at eps=0."""
    plt = pyplot()
    defenses = summary.defenses
    columns = min(4, len(defenses))
    rows = math.ceil(len(defenses) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False, sharey=True)
    reference = next((d for d in defenses if d.kind == "none"), None)
    eps = [0.0] + list(summary.eps)
    keys = summary.eps_keys
    for axis, record in zip(axes.flat, defenses):
        for mode, style in (("naive", "--"), ("adaptive", "-")):
            values = [record.clean_accuracy] + [record.eps[k].accuracy(mode) for k in keys]
            flagged = bool(record.flags(mode))
            axis.plot(eps, [100 * v for v in values], style, marker="x" if flagged else "o",
                      label=mode + (" (!)" if flagged else ""))
        if reference is not None and reference is not record:
            values = [reference.clean_accuracy] + [reference.eps[k].adaptive for k in keys]
            axis.plot(eps, [100 * v for v in values], ":", color="grey", label="undefended")
        axis.set_title(record.label, fontsize=10)
        axis.set_xlabel(f"eps ({summary.norm})")
        axis.set_xticks(eps, ["0"] + [eps_label(k) for k in keys], fontsize=7)
        axis.set_ylim(-3, 103)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(defenses):]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel("accuracy (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def naive_vs_adaptive(summary: RunSummary, path: Path) -> Path:
    """Grouped bars at the largest eps: clean, naive and adaptive accuracy per defence."""
    plt = pyplot()
    key = summary.largest_eps_key
    defenses = summary.defenses
    figure, axis = plt.subplots(figsize=(max(5.0, 1.1 * len(defenses) + 1.5), 3.2))
    width = 0.27
    for offset, (label, values) in enumerate((
        ("clean", [d.clean_accuracy for d in defenses]),
        ("naive", [d.eps[key].naive for d in defenses]),
        ("adaptive", [d.eps[key].adaptive for d in defenses]),
    )):
        positions = [i + (offset - 1) * width for i in range(len(defenses))]
        bars = axis.bar(positions, [100 * v for v in values], width, label=label)
        for bar, value in zip(bars, values):  # a 0% bar has no height: its value is written where it would stand
            if value <= 0:
                axis.annotate("0", (bar.get_x() + bar.get_width() / 2, 0), ha="center", va="bottom", fontsize=7,
                              color=bar.get_facecolor())
        if label in ("naive", "adaptive"):
            for bar, record in zip(bars, defenses):
                if record.flags(label) and record.eps[key].accuracy(label) > 0:
                    axis.annotate("!", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                                  va="bottom", color="#b00020", fontweight="bold")
    axis.set_xticks(range(len(defenses)), [d.label for d in defenses], rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 110)
    axis.set_title(f"eps = {eps_label(key)} ({summary.norm}); ! = flagged by the gradient-masking checklist",
                   fontsize=9)
    axis.legend(fontsize=8, ncols=3, loc="upper right")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def example_grid(summary: RunSummary, out_dir: Path, path: Path, per_defense: int = 4) -> Path | None:
    """Rows = defences; for a few samples: clean | adversarial | amplified perturbation, with predictions
    (the clean images and the adversarial ones are read from the run folder's ``examples/``)."""
    key = summary.largest_eps_key
    eps = max(summary.eps)
    rows = []
    for record in summary.defenses:
        fooled = record.eps[key].examples
        chosen = sorted(fooled.items(), key=lambda item: int(item[0]))[:per_defense]
        rows.append((record, chosen))
    clean = load_clean_examples(out_dir)
    if clean is None or not any(chosen for _, chosen in rows):
        return None
    clean_x, clean_y = clean
    plt = pyplot()
    columns = 3 * per_defense
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.15 * columns, 1.45 * len(rows)), squeeze=False)
    cache: dict[str, dict[str, Any]] = {}
    for r, (record, chosen) in enumerate(rows):
        for c in range(columns):
            axes[r, c].axis("off")
        axes[r, 0].set_ylabel(record.label, fontsize=7)
        if not chosen:
            axes[r, 0].text(0.0, 0.5, f"{record.label}: none of the first samples was fooled", fontsize=7,
                            transform=axes[r, 0].transAxes, va="center")
        for position, (index, info) in enumerate(chosen):
            index = int(index)
            stored = cache.setdefault(info.file, load_examples(out_dir, info.file))
            slot = stored.indices.index(index)
            x = clean_x[index]
            x_adv = stored.x_adv[slot]
            delta = x_adv - x
            scale = delta.abs().max().clamp_min(1e-12) if summary.norm != "linf" else torch.tensor(eps)
            amplified = (0.5 + 0.5 * delta / scale).clamp(0, 1)
            titles = (f"#{index} y={int(clean_y[index])}", f"→{stored.pred[slot]} {info.attack[:10]}\n({info.stage})",
                      "δ amplified")
            for offset, (image, title) in enumerate(zip((x, x_adv, amplified), titles)):
                axis = axes[r, 3 * position + offset]
                _show(axis, image)
                axis.set_title(title, fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _show(axis, image: torch.Tensor) -> None:
    image = image.detach().float().clamp(0, 1)
    if image.shape[0] == 1:
        axis.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        axis.imshow(image.permute(1, 2, 0).numpy())
    axis.axis("on")
    axis.set_xticks([])
    axis.set_yticks([])


def certified_vs_empirical(summary: RunSummary, path: Path) -> Path | None:
    """Per certified defence: certified accuracy against radius (a lower bound) and the attacks'
    robust accuracy at the radius each eps implies (upper bounds, naive and adaptive)."""
    certified = [d for d in summary.defenses if d.certified is not None]
    if not certified:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(1, len(certified), figsize=(4.2 * len(certified), 3.2), squeeze=False)
    for axis, record in zip(axes.flat, certified):
        radii, accuracies = zip(*record.certified.curve)
        axis.step(radii, [100 * a for a in accuracies], where="post", label="certified (lower bound)")
        points = [(p.radius, p.naive, p.adaptive) for p in record.certified.at_eps.values() if p.radius is not None]
        if points:
            reach, naive, adaptive = zip(*points)
            axis.plot(reach, [100 * a for a in adaptive], "o", label="attacks, adaptive (upper bound)")
            axis.plot(reach, [100 * a for a in naive], "x", label="attacks, naive")
        axis.set_title(f"{record.label} ({record.certified.norm} certificate)", fontsize=10)
        axis.set_xlabel(f"radius ({record.certified.norm}); grid: {summary.norm}")
        axis.set_ylabel("accuracy (%)")
        axis.set_ylim(-3, 103)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
