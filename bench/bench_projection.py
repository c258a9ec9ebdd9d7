"""Projection throughput (images/s) at Defense-GAN's L=200, R=10: batched B x R latents vs a loop over restarts.

    python bench/bench_projection.py                    # CPU (or the GPU when there is one)
    python bench/bench_projection.py --device cuda --n-vae 1000 --n-dgan 300

Writes bench/results/projection.md. The weights do not matter for the timing, so
the generators are untrained (same architectures and sizes as the trained ones).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from shieldkit.gan import defense_gan_generator, project, vae

RESULTS = Path(__file__).resolve().parent / "results" / "projection.md"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched(generator, x, steps, restarts):
    return project(generator, x, steps=steps, restarts=restarts)


def restart_loop(generator, x, steps, restarts):
    """The naive way: one projection per restart, keep the best (what the batched version replaces)."""
    best = None
    for _ in range(restarts):
        result = project(generator, x, steps=steps, restarts=1)
        if best is None:
            best = result
        else:
            better = result.error < best.error
            best.images[better], best.error[better] = result.images[better], result.error[better]
    return best


def throughput(method, generator, x, steps, restarts, device, repeats) -> float:
    method(generator, x[:2], 2, restarts)  # warm-up (allocations, kernels)
    _sync(device)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        method(generator, x, steps, restarts)
        _sync(device)
        timings.append(time.perf_counter() - started)
    return x.shape[0] / min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-vae", type=int, default=100, help="images projected with the VAE")
    parser.add_argument("--n-dgan", type=int, default=10, help="images projected with the Defense-GAN generator")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    generators = [("VAE 784-400-20", vae().to(device), args.n_vae),
                  ("Defense-GAN WGAN-GP generator", defense_gan_generator().to(device), args.n_dgan)]
    rows = []
    for name, generator, count in generators:
        x = torch.rand(count, 1, 28, 28, device=device)
        fast = throughput(batched, generator, x, args.steps, args.restarts, device, args.repeats)
        slow = throughput(restart_loop, generator, x, args.steps, args.restarts, device, args.repeats)
        rows.append((name, count, fast, slow))
        print(f"{name}: batched {fast:.1f} images/s, loop over restarts {slow:.1f} images/s ({fast / slow:.1f}x)")

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    lines = [
        "# Projection throughput",
        "",
        f"`python bench/bench_projection.py` on {where}, torch {torch.__version__}: L={args.steps} steps, "
        f"R={args.restarts} restarts, images 1x28x28, best of {args.repeats} runs.",
        "",
        "| generator | images | batched B x R (images/s) | loop over restarts (images/s) | speed-up |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {n} | {c} | {f:.1f} | {s:.1f} | {f / s:.1f}x |" for n, c, f, s in rows]
    if device.type == "cpu":
        gpu = "a GPU was available but not used" if torch.cuda.is_available() else "no GPU on this machine"
        lines += ["", f"CPU only ({gpu}, so no GPU figures). On a CPU one batch of B latents already keeps "
                  "the cores busy, so batching the R restarts gains little for the small VAE."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
