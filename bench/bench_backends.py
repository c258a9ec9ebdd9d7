"""Overhead of calling a backend attack through shieldkit rather than the library directly.

Each case runs the same attack, with the same parameters, on the same model and
batch, once through ``shieldkit.create_attack(...)(model, x, y)`` and once
through the library's own API (torchattacks: ``Attack(model, ...)(x, y)``; ART: a
``PyTorchClassifier`` built once, then ``Attack(estimator, ...).generate(x, y)``
with the NumPy conversions a user would write). Calls alternate between the two
paths and the median of each is reported, so load on the machine affects both
alike. On a shared machine those two medians are noisy, so the overhead is also
measured inside each call through shieldkit: the time spent in the library
(building its attack object, torchattacks' ``Attack.__call__``, ART's
``generate``) is subtracted from the call's total, which leaves shieldkit's own
work, timed under the same load as the library's.

Through shieldkit the model's parameters are frozen for the attack, so a library
that calls ``loss.backward()`` (ART's estimators, torchattacks' C&W) no longer
computes parameter gradients it throws away: those attacks run faster through
shieldkit than called directly on a model with trainable parameters.

shieldkit's extra work per call: input and label validation, the model-state
guard (modes, ``requires_grad``, gradients and buffers restored; parameter values
watched through autograd's version counter), the call counter, a fresh library
attack object, seeding, and the final bounds and eps-ball check.

Usage::

    python bench/bench_backends.py [--repeats 7] [--batch 128] [--threads 1] [--budget 6] [--out bench/results/backends.md]
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

    def frozen(call: Callable) -> Callable:
        """The direct call on frozen parameters, as shieldkit runs it: no parameter gradients computed."""
        def run():
            flags = [p.requires_grad for p in model.parameters()]
            for p in model.parameters():
                p.requires_grad_(False)
            try:
                return call()
            finally:
                for p, flag in zip(model.parameters(), flags):
                    p.requires_grad_(flag)
        return run

    art_fgsm = art_direct(lambda: FastGradientMethod(estimator, eps=0.1, batch_size=batch))
    art_pgd = art_direct(lambda: ProjectedGradientDescent(estimator, eps=0.3, eps_step=0.01, max_iter=20,
                                                          batch_size=batch, verbose=False))
    cw = lambda: torchattacks.CW(model, c=1.0, kappa=0, steps=20, lr=0.01)(x, y)  # noqa: E731

    return [
        ("FGSM (torchattacks)", shieldkit_call("fgsm.torchattacks", eps=0.1),
         lambda: torchattacks.FGSM(model, eps=0.1)(x, y)),
        ("PGD, 20 steps (torchattacks)",
         shieldkit_call("pgd.torchattacks", eps=0.3, steps=20, step_size=0.01, random_start=False),
         lambda: torchattacks.PGD(model, eps=0.3, alpha=0.01, steps=20, random_start=False)(x, y)),
        ("CW, 20 steps (torchattacks)", shieldkit_call("cw.torchattacks", c=1.0, steps=20, step_size=0.01), cw),
        ("CW, 20 steps (torchattacks), direct on frozen parameters",
         shieldkit_call("cw.torchattacks", c=1.0, steps=20, step_size=0.01), frozen(cw)),
        ("FGSM (ART)", shieldkit_call("fgsm.art", eps=0.1), art_fgsm),
        ("FGSM (ART), direct on frozen parameters", shieldkit_call("fgsm.art", eps=0.1), frozen(art_fgsm)),
        ("PGD, 20 steps (ART)", shieldkit_call("pgd.art", eps=0.3, steps=20, step_size=0.01), art_pgd),
        ("PGD, 20 steps (ART), direct on frozen parameters",
         shieldkit_call("pgd.art", eps=0.3, steps=20, step_size=0.01), frozen(art_pgd)),
        ("DeepFool, 20 steps (ART)", shieldkit_call("deepfool.art", steps=20, overshoot=0.02),
         art_direct(lambda: DeepFool(estimator, max_iter=20, epsilon=0.02, nb_grads=10, batch_size=batch,
                                     verbose=False))),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=6.0, help="seconds per path for short attacks")
    parser.add_argument("--only", default="", help="run only the cases whose label contains this text")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "backends.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = mnist_cnn().eval()
    x, y = _batch(args.batch)

    import torchattacks
    from art.attacks.evasion import DeepFool, FastGradientMethod, ProjectedGradientDescent

    clock = _LibraryClock()
    # The library's own work: building its attack object (both paths do it on every call) and running it.
    for cls in (torchattacks.FGSM, torchattacks.PGD, torchattacks.CW):
        clock.watch(cls, "__init__")
    clock.watch(torchattacks.attack.Attack, "__call__")
    for cls in (FastGradientMethod, ProjectedGradientDescent, DeepFool):
        clock.watch(cls, "__init__")
        clock.watch(cls, "generate")
    rows = []
    try:
        for label, through, direct in _cases(model, x, y):
            if args.only not in label:
                continue
            started = time.perf_counter()
            through(), direct()  # warm-up (imports, estimator cache, allocator)
            # Short calls are noisy: repeat them until about --budget seconds are spent on each path.
            warm_up = (time.perf_counter() - started) / 2
            repeats = max(args.repeats, min(300, int(args.budget / max(warm_up, 1e-3))))
            times: dict[str, list[float]] = {"shieldkit": [], "direct": [], "own": [], "share": []}
            for repeat in range(repeats):
                order = (("shieldkit", through), ("direct", direct))
                for key, call in order if repeat % 2 else order[::-1]:
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
            paired = statistics.median(100 * (a - b) / b for a, b in zip(times["shieldkit"], times["direct"]))
            rows.append((label, repeats, theirs, ours, 100 * (ours - theirs) / theirs, paired, own, share))
            print(f"{label:30s} x{repeats:<4d} direct {1e3 * theirs:8.1f} ms  shieldkit {1e3 * ours:8.1f} ms "
                  f"({rows[-1][4]:+.1f}%, paired {paired:+.1f}%)  shieldkit's own work {1e3 * own:6.2f} ms "
                  f"= {share:+.2f}%", file=sys.stderr)
    finally:
        clock.restore()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Backend overhead: shieldkit vs the library called directly",
        "",
        f"`python bench/bench_backends.py --repeats {args.repeats} --batch {args.batch} --threads {args.threads}`: "
        f"median of alternating calls (at least {args.repeats}; short attacks repeated for about {args.budget:g} s "
        f"per path), MNIST CNN (`mnist_cnn()`, 1.2M parameters), batch of {args.batch}, "
        f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"{args.threads} thread(s), load average {load:.1f} at the end.",
        "",
        "| attack | calls per path | direct (ms) | through shieldkit (ms) | difference of medians "
        "| median of paired differences | shieldkit's own work (ms) | overhead measured in-call |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {label} | {repeats} | {1e3 * theirs:.1f} | {1e3 * ours:.1f} | {overhead:+.1f}% | {paired:+.1f}% "
              f"| {1e3 * own:.2f} | {share:+.2f}% |"
              for label, repeats, theirs, ours, overhead, paired, own, share in rows]
    lines += [
        "",
        "*Difference of medians* compares the two paths' medians; *paired differences* compare each call "
        "through shieldkit with the direct call next to it; both carry the machine's noise (a percent or two "
        "between two runs of the same code). *Overhead measured in-call* is shieldkit's own time within each "
        "call (total minus the library's time: building its attack object, which both paths do, and running "
        "it) over the library's time, both under the same load. The forward hooks shieldkit puts on the model "
        "(counting calls, checking labels) run inside the library's time, so only the medians show them. "
        "Through shieldkit the parameters are frozen, so libraries that call `loss.backward()` (ART, "
        "torchattacks' C&W) skip parameter gradients: hence the negative differences; the rows *direct on frozen parameters* "
        "freeze them in the direct call too, for the overhead alone. shieldkit's fixed "
        "cost per call is input and label validation, the state guard (modes, `requires_grad`, gradients "
        "and buffers; parameter values are watched through autograd's version counter, not copied), the "
        "call counter, a fresh library object, the output check and, for ART, NumPy conversion.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
