"""Throughput of sharded evaluation and DDP adversarial training for 1, 2, ... processes.

Each configuration starts its processes with ``torch.multiprocessing.spawn``
(gloo on the CPU with ``--threads`` threads each, nccl on GPUs with one GPU per
process) and times, between barriers, (1) ``sk.evaluate`` of ``--n`` MNIST test
images against FGSM and PGD-20 at eps 0.1 with no defence (masking checks off:
they run on rank 0 alone), report writing included, and (2) one epoch of FGSM
adversarial training of ``mnist_cnn`` on ``--train-samples`` images at a fixed
global batch (``--global-batch`` split across the processes). Process start-up
and model loading are not timed. Writes (or with ``--append`` adds) a Markdown
table to bench/results/distributed.md.

Usage:
    python bench/bench_distributed.py [--processes 1 2] [--device cpu] [--n 400] [--repeats 2]
    python bench/bench_distributed.py --device cuda --processes 1 --n 5000 --batch-size 500 --append
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker(rank: int, world: int, port: int, options: dict, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS=str(options["threads"]))
    torch.set_num_threads(options["threads"])
    import shieldkit as sk
    from shieldkit.data import load
    from shieldkit.infra import distributed
    from shieldkit.models import mnist_cnn

    distributed.init_from_env()
    device = distributed.device() if options["device"] == "cuda" else torch.device("cpu")
    model = torch.load(options["model"], map_location="cpu", weights_only=False).to(device).eval()
    test = load("mnist", split="test")
    train = load("mnist", split="train").subset(options["train_samples"], seed=0)
    # Warm-up (CUDA context, kernels), not timed.
    sk.create_attack("pgd", eps=0.3, steps=2)(model, test.x[:8].to(device), test.y[:8].to(device))

    distributed.barrier()
    started = time.perf_counter()
    report = sk.evaluate(model, test, attacks=["fgsm", ("pgd", {"steps": 20, "random_start": False})],
                         defenses=["none"], eps=[0.1], n=options["n"], batch_size=options["batch_size"],
                         out_dir=str(Path(folder) / "eval"), quiet=True, checks=False, seed=0)
    distributed.barrier()
    evaluation = time.perf_counter() - started

    torch.manual_seed(0)
    fresh = mnist_cnn()
    trainer = sk.create_defense("adversarial_training", attack="fgsm", eps=0.1)
    distributed.barrier()
    started = time.perf_counter()
    trainer.fit(fresh, train, epochs=1, batch_size=options["global_batch"] // world, lr=1e-3, seed=0,
                device=str(device))
    distributed.barrier()
    training = time.perf_counter() - started
    if rank == 0:
        torch.save({"evaluation": evaluation, "training": training,
                    "clean": report.summary["defenses"][0]["clean_accuracy"],
                    "robust": report.robust_accuracy("none", 0.1)}, Path(folder) / "result.pt")
    distributed.shutdown()


def measure(world: int, options: dict) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(world, free_port(), options, folder), nprocs=world)
        return torch.load(Path(folder) / "result.pt", weights_only=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--n", type=int, default=400, help="evaluation images")
    parser.add_argument("--batch-size", type=int, default=50, help="evaluation chunk (unit of sharding)")
    parser.add_argument("--train-samples", type=int, default=2048)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs; the best of each is reported")
    parser.add_argument("--append", action="store_true", help="add a section to the results file")
    parser.add_argument("--out", default=str(HERE / "results" / "distributed.md"))
    args = parser.parse_args()
    os.environ.setdefault("SHIELDKIT_DATA", str(HERE.parent.parent / "shared" / "data"))
    from shieldkit.data import load
    from shieldkit.models import fit_classifier, mnist_cnn

    torch.manual_seed(0)
    model = fit_classifier(mnist_cnn(), load("mnist", split="train").subset(4000, seed=0), epochs=1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt2"  # a torch.export program: --model refuses a whole pickled module
        batch = torch.export.Dim("batch")
        torch.export.save(torch.export.export(model.eval(), (torch.zeros(2, 1, 28, 28),),
                                              dynamic_shapes=({0: batch},)), path)
        options = {"device": args.device, "threads": args.threads, "n": args.n, "batch_size": args.batch_size,
                   "train_samples": args.train_samples, "global_batch": args.global_batch, "model": str(path)}
        best: dict[int, dict] = {}
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            for world in args.processes:
                result = measure(world, options)
                print(world, result, flush=True)
                kept = best.setdefault(world, result)
                kept["evaluation"] = min(kept["evaluation"], result["evaluation"])
                kept["training"] = min(kept["training"], result["training"])
    write(args, best, (load_before, os.getloadavg()[0]))
    return 0


def write(args, best: dict[int, dict], load: tuple[float, float]) -> None:
    where = (torch.cuda.get_device_name(0) if args.device == "cuda"
             else f"CPU, {args.threads} thread(s) per process, {os.cpu_count()} CPUs visible")
    base = best[min(best)]
    lines = [
        f"## {args.device}: {where}",
        "",
        f"`python bench/bench_distributed.py --device {args.device} --processes {' '.join(map(str, args.processes))} "
        f"--n {args.n} --batch-size {args.batch_size} --train-samples {args.train_samples} --global-batch "
        f"{args.global_batch} --repeats {args.repeats}` on {platform.machine()}, torch {torch.__version__} "
        f"(best of {args.repeats} alternating runs); 1-minute load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after.",
        "",
        "| processes | evaluation s | images/s | speed-up | robust acc. % | clean acc. % | AT epoch s | "
        "train samples/s | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for world, result in sorted(best.items()):
        lines.append(
            f"| {world} | {result['evaluation']:.2f} | {args.n / result['evaluation']:.1f} | "
            f"{base['evaluation'] / result['evaluation']:.2f}x | {100 * result['robust']:.1f} | "
            f"{100 * result['clean']:.1f} | {result['training']:.2f} | "
            f"{args.train_samples / result['training']:.1f} | {base['training'] / result['training']:.2f}x |")
    section = "\n".join(lines) + "\n"
    out = Path(args.out)
    if args.append and out.is_file():
        out.write_text(out.read_text().rstrip() + "\n\n" + section)
    else:
        header = ("# Distributed throughput\n\nSharded `sk.evaluate` (FGSM + PGD-20, eps 0.1, MNIST, no defence, "
                  "report included) and one epoch of DDP FGSM adversarial training of `mnist_cnn` at a fixed "
                  "global batch. Robust accuracy must be the same for every process count.\n\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(header + section)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
