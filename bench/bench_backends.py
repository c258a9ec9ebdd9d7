"""Overhead of calling a backend attack through shieldkit rather than the library directly.

Each case runs the same attack, with the same parameters, on the same model and
batch, once through ``shieldkit.create_attack(...)(model, x, y)`` and once
through the library's own API (torchattacks: ``Attack(model, ...)(x, y)``; ART: a
``PyTorchClassifier`` built once, then ``Attack(estimator, ...).generate(x, y)``
with the NumPy conversions a user would write). Calls alternate between the two
paths and the median of each is reported, so load on the machine affects both
alike. On a shared machine those two medians are noisy, so the overhead is also
measured inside each call through shieldkit: the time spent in the library's
own call (torchattacks' ``Attack.__call__``, ART's ``generate``) is subtracted
from the call's total, which leaves shieldkit's own work, timed under the same
load as the library's.

shieldkit's extra work per call: input validation, one forward pass of one image
to check the labels, the model-state guard (a copy of every parameter, buffer and
gradient, restored afterwards), the call counter, a fresh library attack object,
seeding, and the final bounds and eps-ball check.

Usage::

    python bench/bench_backends.py [--repeats 7] [--batch 128] [--threads 1] [--out bench/results/backends.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import shieldkit as sk
from shieldkit.models import mnist_cnn


def _batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from shieldkit.data import load

        data = load("mnist", split="test").head(size)
        return data.x, data.y
    except Exception:  # no MNIST files: random images time the same
        generator = torch.Generator().manual_seed(0)
        return torch.rand(size, 1, 28, 28, generator=generator), torch.randint(0, 10, (size,), generator=generator)


class _LibraryClock:
    """Accumulates the time spent in the libraries' outermost attack calls."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._depth = 0
        self._patched: list[tuple[type, str, Callable]] = []

    def watch(self, owner: type, name: str) -> None:
        original = owner.__dict__[name]
        clock = self

        def timed(*args, **kwargs):
            clock._depth += 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                clock._depth -= 1
                if clock._depth == 0:
                    clock.seconds += time.perf_counter() - started

        setattr(owner, name, timed)
        self._patched.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._patched):
            setattr(owner, name, original)


def _cases(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[str, Callable, Callable]]:
    import torchattacks
    from art.attacks.evasion import DeepFool, FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    estimator = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                  nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    batch = x.shape[0]

    def art_direct(make: Callable) -> Callable:
        def run():
            x_np, y_np = x.numpy(), np.eye(10, dtype=np.float32)[y.numpy()]
            return torch.from_numpy(make().generate(x_np, y=y_np))
        return run

    def shieldkit_call(name: str, **params) -> Callable:
        return lambda: sk.create_attack(name, **params)(model, x, y)

    return [
        ("FGSM (torchattacks)", shieldkit_call("fgsm.torchattacks", eps=0.1),
         lambda: torchattacks.FGSM(model, eps=0.1)(x, y)),
        ("PGD, 20 steps (torchattacks)",
         shieldkit_call("pgd.torchattacks", eps=0.3, steps=20, step_size=0.01, random_start=False),
         lambda: torchattacks.PGD(model, eps=0.3, alpha=0.01, steps=20, random_start=False)(x, y)),
        ("CW, 20 steps (torchattacks)", shieldkit_call("cw.torchattacks", c=1.0, steps=20, step_size=0.01),
         lambda: torchattacks.CW(model, c=1.0, kappa=0, steps=20, lr=0.01)(x, y)),
        ("FGSM (ART)", shieldkit_call("fgsm.art", eps=0.1),
         art_direct(lambda: FastGradientMethod(estimator, eps=0.1, batch_size=batch))),
        ("PGD, 20 steps (ART)", shieldkit_call("pgd.art", eps=0.3, steps=20, step_size=0.01),
         art_direct(lambda: ProjectedGradientDescent(estimator, eps=0.3, eps_step=0.01, max_iter=20,
                                                     batch_size=batch, verbose=False))),
        ("DeepFool, 20 steps (ART)", shieldkit_call("deepfool.art", steps=20, overshoot=0.02),
         art_direct(lambda: DeepFool(estimator, max_iter=20, epsilon=0.02, nb_grads=10, batch_size=batch,
                                     verbose=False))),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "backends.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = mnist_cnn().eval()
    x, y = _batch(args.batch)

    import torchattacks
    from art.attacks.evasion import DeepFool, FastGradientMethod, ProjectedGradientDescent

    clock = _LibraryClock()
    clock.watch(torchattacks.attack.Attack, "__call__")
    for cls in (FastGradientMethod, ProjectedGradientDescent, DeepFool):
        clock.watch(cls, "generate")
    rows = []
    try:
        for label, through, direct in _cases(model, x, y):
            through(), direct()  # warm-up (imports, estimator cache, allocator)
            times: dict[str, list[float]] = {"shieldkit": [], "direct": [], "own": [], "share": []}
            for _ in range(args.repeats):
                for key, call in (("shieldkit", through), ("direct", direct)):
                    clock.seconds = 0.0
                    started = time.perf_counter()
                    call()
                    elapsed = time.perf_counter() - started
                    times[key].append(elapsed)
                    if key == "shieldkit":
                        times["own"].append(elapsed - clock.seconds)
                        times["share"].append(100 * (elapsed - clock.seconds) / clock.seconds)
            ours, theirs = statistics.median(times["shieldkit"]), statistics.median(times["direct"])
            own, share = statistics.median(times["own"]), statistics.median(times["share"])
            rows.append((label, theirs, ours, 100 * (ours - theirs) / theirs, own, share))
            print(f"{label:30s} direct {1e3 * theirs:8.1f} ms  shieldkit {1e3 * ours:8.1f} ms "
                  f"({rows[-1][3]:+.1f}%)  shieldkit's own work {1e3 * own:6.1f} ms = {share:+.2f}%", file=sys.stderr)
    finally:
        clock.restore()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Backend overhead: shieldkit vs the library called directly",
        "",
        f"`python bench/bench_backends.py --repeats {args.repeats} --batch {args.batch} --threads {args.threads}`: "
        f"median of {args.repeats} alternating calls, MNIST CNN (`mnist_cnn()`), batch of {args.batch}, "
        f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"{args.threads} thread(s), load average {load:.1f} at the end.",
        "",
        "| attack | direct (ms) | through shieldkit (ms) | difference of medians | shieldkit's own work (ms) "
        "| overhead measured in-call |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {label} | {1e3 * theirs:.1f} | {1e3 * ours:.1f} | {overhead:+.1f}% | {1e3 * own:.1f} | {share:+.2f}% |"
              for label, theirs, ours, overhead, own, share in rows]
    lines += [
        "",
        "*Difference of medians* compares separate calls and carries the machine's noise; *overhead measured "
        "in-call* is shieldkit's own time within each call (total minus the library's attack call) over the "
        "library's time, both under the same load. shieldkit's fixed cost per call (validation, one extra "
        "forward of one image, the state guard's copy of the parameters, a fresh library object, NumPy "
        "conversion for ART) is a few milliseconds: visible next to a single FGSM step, negligible next to an "
        "iterative attack.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
