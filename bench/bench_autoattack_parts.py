"""Benchmark shieldkit's native AutoAttack parts (APGD-CE, APGD-T, FMN, Square) against torchattacks and ART.

Run by hand (not a test)::

    SHIELDKIT_DATA=../shared/data .venv/bin/python bench/bench_autoattack_parts.py                 # official budgets
    SHIELDKIT_DATA=../shared/data .venv/bin/python bench/bench_autoattack_parts.py --n 200 --queries 1000

Setting (issue 13): a small CNN adversarially trained by this script with PGD at
eps=0.3 (Madry et al.; cached under ``.shieldkit-cache/bench_autoattack_parts/``),
the first ``--n`` MNIST test images, L-inf eps=0.3, ``torch.set_num_threads(2)``.
Each role is measured side by side in one run, at AutoAttack's budgets unless
lowered by the flags (the table header says what ran):

* APGD-CE: native ``apgd`` vs ``torchattacks.APGD`` vs ART ``AutoProjectedGradientDescent`` (100 steps, 1 restart);
* APGD-T: native ``apgd_t`` vs ``torchattacks.APGDT`` (9 target classes, 100 steps each); ART has no top-k variant;
* minimal norm: native ``fmn`` (projected onto the ball) vs ``torchattacks.FAB`` (100 steps), robust accuracy at eps;
* Square: native ``square`` vs ``torchattacks.Square`` vs ART ``SquareAttack`` (5000 queries).

Robust accuracy is over all ``--n`` images (a misclassified clean image counts as
broken). Forwards and images forwarded are counted by a hook on the model for
every library alike. Writes ``bench/results/autoattack_parts.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SHIELDKIT_DATA", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))

EPS = 0.3
CACHE = REPO / ".shieldkit-cache" / "bench_autoattack_parts"


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def pgd_trained(n_train: int, epochs: int, steps: int) -> nn.Module:
    """Madry-style PGD training at eps=0.3 (ramped up over the first epoch), cached by its settings."""
    from shieldkit.data import load

    path = CACHE / f"pgd_cnn_n{n_train}_e{epochs}_s{steps}.pt"
    torch.manual_seed(0)
    model = small_cnn()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    data = load("mnist", split="train").subset(n_train, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = (n_train + 99) // 100
    for epoch in range(epochs):
        order = torch.randperm(n_train)
        for b in range(batches):
            index = order[b * 100:(b + 1) * 100]
            x, y = data.x[index], data.y[index]
            eps = EPS * min(1.0, (epoch * batches + b + 1) / batches)
            x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
            model.eval()
            for _ in range(steps):
                x_adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
                x_adv = torch.min(torch.max(x_adv.detach() + 2.5 * eps / steps * grad.sign(), x - eps), x + eps)
                x_adv = x_adv.clamp(0, 1)
            model.train()
            loss = F.cross_entropy(model(x_adv), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.3f}", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


class Counted:
    """Counts forward passes and images forwarded through ``model`` while active."""

    def __init__(self, model: nn.Module):
        self.model, self.forwards, self.images = model, 0, 0

    def __enter__(self):
        def hook(module, inputs, output):
            self.forwards += 1
            self.images += inputs[0].shape[0]

        self.handle = self.model.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def measure(model, x, y, run) -> dict:
    """Robust accuracy, seconds, forwards and images forwarded of ``run(x, y) -> x_adv``."""
    with Counted(model) as counted:
        started = time.perf_counter()
        x_adv = run(x, y)
        seconds = time.perf_counter() - started
    x_adv = torch.as_tensor(x_adv, dtype=x.dtype)
    assert (x_adv - x).abs().max().item() <= EPS + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        accuracy = (model(x_adv).argmax(dim=1) == y).float().mean().item()
    return {"accuracy": accuracy, "seconds": seconds, "forwards": counted.forwards, "images": counted.images}


def art_classifier(model):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                             clip_values=(0.0, 1.0), device_type="cpu")


def rows_for(model, x, y, steps: int, queries: int) -> list[tuple[str, str, dict]]:
    import torchattacks
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

    import shieldkit as sk

    native = lambda attack: (lambda a, b: attack(model, a, b))  # noqa: E731
    numpy = lambda attack: (lambda a, b: torch.from_numpy(attack.generate(a.numpy(), y=b.numpy())))  # noqa: E731
    batch = len(y)
    plan = [
        ("APGD-CE", "shieldkit", native(sk.create_attack("apgd", eps=EPS, steps=steps, seed=0))),
        ("APGD-CE", "torchattacks", torchattacks.APGD(model, eps=EPS, steps=steps, seed=0)),
        ("APGD-CE", "ART", numpy(AutoProjectedGradientDescent(
            art_classifier(model), norm=np.inf, eps=EPS, eps_step=2 * EPS, max_iter=steps, nb_random_init=1,
            batch_size=batch, loss_type="cross_entropy", verbose=False))),
        ("APGD-T", "shieldkit", native(sk.create_attack("apgd_t", eps=EPS, steps=steps, seed=0))),
        ("APGD-T", "torchattacks", torchattacks.APGDT(model, eps=EPS, steps=steps, n_classes=10, seed=0)),
        ("min-norm (FMN / FAB)", "shieldkit", native(sk.create_attack("fmn", eps=EPS, steps=steps))),
        ("min-norm (FMN / FAB)", "torchattacks", torchattacks.FAB(model, eps=EPS, steps=steps, n_classes=10,
                                                                  seed=0)),
        ("Square", "shieldkit", native(sk.create_attack("square", eps=EPS, queries=queries, seed=0))),
        ("Square", "torchattacks", torchattacks.Square(model, eps=EPS, n_queries=queries, seed=0)),
        ("Square", "ART", numpy(SquareAttack(art_classifier(model), norm=np.inf, eps=EPS, max_iter=queries,
                                             p_init=0.8, nb_restarts=1, batch_size=batch, verbose=False))),
    ]
    rows = []
    for role, library, run in plan:
        torch.manual_seed(0)
        np.random.seed(0)
        result = measure(model, x, y, run)
        print(f"{role:22s} {library:12s} {result}", file=sys.stderr)
        rows.append((role, library, result))
    return rows


def counts(result: dict) -> str:
    """Forwards and images forwarded; ART's APGD builds its own estimator around a copy of the model, unseen."""
    if result["forwards"] == 0:
        return "not seen (copied model) | not seen"
    return f"{result['forwards']} | {result['images']}"


def render(rows, args, clean: float, pgd40: float) -> str:
    native = {role: result for role, library, result in rows if library == "shieldkit"}
    lines = [
        "# AutoAttack's parts: native vs torchattacks vs ART",
        "",
        f"PGD-trained small CNN (eps=0.3, {args.n_train} training images, {args.epochs} epochs, PGD-{args.train_steps}),"
        f" {args.n} MNIST test images, L-inf eps=0.3; clean accuracy {clean:.1%}, PGD-40 robust accuracy {pgd40:.1%}."
        f" Budgets: {args.steps} iterations (APGD-CE, APGD-T over 9 targets, FMN/FAB), Square {args.queries} queries"
        f"{' (AutoAttack: 100 iterations, 5000 queries)' if (args.steps, args.queries) != (100, 5000) else ''}."
        f" torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()},"
        " on a shared machine (times are one run each, side by side).",
        "",
        "| attack | library | robust accuracy | vs native (points) | seconds | time / native | forwards | images forwarded |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for role, library, result in rows:
        base = native[role]
        lines.append(
            f"| {role} | {library} | {result['accuracy']:.1%} | {100 * (result['accuracy'] - base['accuracy']):+.1f} "
            f"| {result['seconds']:.1f} | {result['seconds'] / base['seconds']:.2f}x | {counts(result)} |")
    lines += ["", "'vs native' is the library's robust accuracy minus shieldkit's: positive means shieldkit's "
              "attack is stronger. 'time / native' above 1 means shieldkit is faster.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="test images")
    parser.add_argument("--steps", type=int, default=100, help="iterations of APGD, APGD-T, FMN and FAB")
    parser.add_argument("--queries", type=int, default=5000, help="Square's queries per image")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "autoattack_parts.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    import shieldkit as sk
    from shieldkit.data import load

    model = pgd_trained(args.n_train, args.epochs, args.train_steps)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    test = load("mnist", split="test")
    x, y = test.x[:args.n], test.y[:args.n]
    with torch.no_grad():
        clean = (model(x).argmax(dim=1) == y).float().mean().item()
    pgd = sk.create_attack("pgd", eps=EPS, steps=40, step_size=0.01, seed=0).run(model, x, y)
    pgd40 = 1 - pgd.success.float().mean().item()
    text = render(rows_for(model, x, y, args.steps, args.queries), args, clean, pgd40)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
