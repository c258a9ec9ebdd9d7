"""Scale: shieldkit's standard suite against torchattacks' AutoAttack on CIFAR- and ImageNet-shaped networks.

Run by hand (not a test)::

    .venv/bin/python bench/bench_scale.py                 # the device's profile (cpu: small widths, few images)
    .venv/bin/python bench/bench_scale.py --profile gpu   # the published widths, a few hundred images

Side by side in one run, on whatever device is present (``--device``):

* The models (``bench/scale_models.py``, plain torch): ResNet-18 (CIFAR variant) and
  WideResNet-28-10 on 32x32 images, ResNet-50 (ImageNet variant) on 224x224, each behind its
  ``Normalize``. ``--width-resnet18``, ``--widen-wrn`` and ``--width-resnet50`` scale their
  channels. The ``cpu`` profile narrows them and takes a few images: a published WRN-28-10
  costs 0.13 s per image and forward pass on two CPU cores and a ResNet-50 at 224x224 0.10 s,
  and AutoAttack spends the equivalent of about 10,000 forward passes on each robust image.
* The data: a CIFAR-shaped stand-in built from real MNIST digits, resized (bilinear) to
  32x32 or 224x224 and coloured: a random background and a random digit colour per image
  (at least 0.4 apart on average over the channels), three channels in [0, 1]. The training
  images come from MNIST's training split, the benchmark's from its test split.
* Training: ``--clean-epochs`` clean (from random weights FGSM-RS at once learns nothing in a
  few hundred steps on these colours), then ``--epochs`` adversarial ones at eps 8/255 (32x32)
  or 4/255 (224x224), Adam at 2e-3, so that the cheap attacks do not end the cascade at once:
  FGSM with a random start on the 32x32 models (Wong, Rice, Kolter 2020, "Fast is better than
  free": step 1.25 eps from a uniform start in the ball), PGD-2 (steps of 1.25 eps from the same
  start) on the ResNet-50, where FGSM-RS overfitted catastrophically (FGSM 72%, PGD-10 0%). Cached in ``bench/.cache/scale/`` (gitignored) under a name holding
  every training setting; a rerun loads it.
  The model's clean, FGSM and PGD-10 accuracy on the benchmark images are printed as its check.
* shieldkit: ``shieldkit.evaluate(model, (x, y), eps=[eps], suite="standard")`` with its
  defaults otherwise (diagnosis and masking checks included, as a user runs it) and the
  chunk ``--batch-size``; its attack-only time is the sum of its attack units' seconds (the
  rest is the diagnosis, the checks' measurements, the clean pass and the reports).
* torchattacks: ``torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
  n_classes=10, seed=0)``, its APGD-CE, APGD-T and FAB-T set to the paper's 100 iterations
  (torchattacks builds them with 10; Square has its 5000 queries), on the same images in
  batches of ``--batch-size``.
* Measured for each: robust accuracy with its 95% Clopper-Pearson interval
  (``shieldkit.evaluation.intervals``), wall and CPU time, images per second, the time ratio
  shieldkit / AutoAttack, and peak memory: the process's peak RSS during the run (VmHWM,
  reset before each run through ``/proc/self/clear_refs`` after ``malloc_trim`` has handed the
  earlier runs' freed heap back) and, on CUDA,
  ``torch.cuda.max_memory_allocated``. The two runs on a model alternate which goes first
  (``--first``), and the load average is recorded before and after each: other jobs share
  the machine.
* Streaming (``--stream-images``, 0 skips it): a folder of generated ImageNet-size JPEGs
  (500x375, coloured digits) in the class-folder layout, read through
  ``shieldkit.data.load("imagenet", root=...)`` (streamed: decoded one chunk at a time) and
  evaluated with FGSM on the ResNet-50 (``adaptive=False, checks=False``: the data path's
  memory, not the suite's); its peak RSS against the folder's decoded size (3x224x224
  float32 per image, what holding the set in memory takes).

Writes ``bench/results/scale.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import platform
import re
import resource
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SHIELDKIT_DATA", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import scale_models  # noqa: E402  (bench/ is on the path above)

CACHE = REPO / "bench" / ".cache" / "scale"
EPS = {32: 8 / 255, 224: 4 / 255}
MIN_CONTRAST = 0.4

#: Per profile, the defaults of the size flags: ``cpu`` fits two shared cores in about 25 minutes
#: (training cached), ``gpu`` is the published models on a few hundred images.
PROFILES = {
    "cpu": dict(width_resnet18=8, widen_wrn=1, width_resnet50=8, images_resnet18=12, images_wrn=4,
                images_resnet50=3,
                train_images=10000, imagenet_train_images=4000, epochs=1, imagenet_epochs=2,
                clean_epochs=1, imagenet_clean_epochs=2, train_steps=1, imagenet_train_steps=2,
                train_batch=128, imagenet_train_batch=32, batch_size=100, stream_images=2000, stream_batch=32,
                threads=1),
    "gpu": dict(width_resnet18=64, widen_wrn=10, width_resnet50=64, images_resnet18=500, images_wrn=500,
                images_resnet50=200,
                train_images=60000, imagenet_train_images=20000, epochs=3, imagenet_epochs=2,
                clean_epochs=1, imagenet_clean_epochs=1, train_steps=1, imagenet_train_steps=2,
                train_batch=256, imagenet_train_batch=64, batch_size=500, stream_images=5000, stream_batch=256,
                threads=0),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="the size defaults below (default: gpu on CUDA, else cpu)")
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--models", default="resnet18,wrn28,resnet50",
                        help=f"comma-separated, of {', '.join(scale_models.MODELS)}")
    parser.add_argument("--width-resnet18", type=int, help="ResNet-18's first width (published: 64)")
    parser.add_argument("--widen-wrn", type=int, help="WRN-28's widening factor (published: 10)")
    parser.add_argument("--width-resnet50", type=int, help="ResNet-50's first width (published: 64)")
    parser.add_argument("--images-resnet18", type=int, help="benchmark images (coloured MNIST test digits)")
    parser.add_argument("--images-wrn", type=int, help="benchmark images for WRN-28")
    parser.add_argument("--images-resnet50", type=int, help="benchmark images for ResNet-50 (224x224)")
    parser.add_argument("--train-images", type=int, help="training images, 32x32 models")
    parser.add_argument("--imagenet-train-images", type=int, help="training images, ResNet-50")
    parser.add_argument("--clean-epochs", type=int, help="clean epochs first, 32x32 models")
    parser.add_argument("--imagenet-clean-epochs", type=int, help="clean epochs first, ResNet-50")
    parser.add_argument("--train-steps", type=int, help="attack steps per training example, 32x32 models (1: FGSM-RS)")
    parser.add_argument("--imagenet-train-steps", type=int, help="the same, ResNet-50 (FGSM-RS overfits "
                                                                 "catastrophically there: FGSM 72%%, PGD-10 0%%)")
    parser.add_argument("--epochs", type=int, help="adversarial epochs, 32x32 models")
    parser.add_argument("--imagenet-epochs", type=int, help="adversarial epochs, ResNet-50")
    parser.add_argument("--train-batch", type=int, help="training batch, 32x32 models")
    parser.add_argument("--imagenet-train-batch", type=int, help="training batch, ResNet-50")
    parser.add_argument("--batch-size", help="shieldkit's chunk and AutoAttack's batch (an int; 'auto' on CUDA: "
                                             "shieldkit.infra.memory.auto_batch_size, the same for both)")
    parser.add_argument("--first", choices=("alternate", "shieldkit", "autoattack"), default="alternate",
                        help="which evaluation runs first on each model (alternate: shieldkit on the 1st, 3rd...)")
    parser.add_argument("--stream-images", type=int, help="generated JPEGs for the streaming run (0: skip it)")
    parser.add_argument("--stream-batch", type=int, help="the streaming run's chunk (its autograd activations are "
                                                          "part of the peak; on a CPU they share the RSS)")
    parser.add_argument("--threads", type=int, help="torch threads (0: torch's default); one on a shared CPU, where "
                                                     "two threads of each of several jobs on two cores slow every "
                                                     "OpenMP region several times over")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "scale.md"))
    args = parser.parse_args(argv)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.profile = args.profile or ("gpu" if args.device.type == "cuda" else "cpu")
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in args.models if name not in scale_models.MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(scale_models.MODELS)}")
    if str(args.batch_size) != "auto":
        args.batch_size = int(args.batch_size)
    return args


# ------------------------------------------------------------------ the stand-in data


@dataclass
class Digits:
    """MNIST digits with a background and a digit colour each, rendered at any side on demand."""

    digits: torch.Tensor  # [N, 1, 28, 28] in [0, 1]
    y: torch.Tensor
    background: torch.Tensor  # [N, 3, 1, 1]
    ink: torch.Tensor  # [N, 3, 1, 1]

    def __len__(self) -> int:
        return len(self.y)

    def render(self, index, side: int, device=None) -> torch.Tensor:
        """The images at ``index``, ``[B, 3, side, side]`` in [0, 1]."""
        digits = self.digits[index].to(device)
        shape = F.interpolate(digits, size=(side, side), mode="bilinear", align_corners=False).clamp_(0, 1)
        background, ink = self.background[index].to(device), self.ink[index].to(device)
        return background + (ink - background) * shape


def stand_in(split: str, n: int, seed: int) -> Digits:
    """``n`` seeded MNIST digits of ``split`` with their colours (a digit colour redrawn until it stands out)."""
    from shieldkit.data import load

    data = load("mnist", split=split)
    if n < len(data):
        data = data.subset(n, seed=seed)
    generator = torch.Generator().manual_seed(1000 + seed)
    count = len(data)
    background = torch.rand(count, 3, 1, 1, generator=generator)
    ink = torch.rand(count, 3, 1, 1, generator=generator)
    for _ in range(100):
        close = (ink - background).abs().mean(dim=(1, 2, 3)) < MIN_CONTRAST
        if not close.any():
            break
        ink[close] = torch.rand(int(close.sum()), 3, 1, 1, generator=generator)
    return Digits(data.x.float(), data.y.long(), background, ink)


# ------------------------------------------------------------------ the models


def side_of(name: str) -> int:
    return scale_models.MODELS[name][2]


def width_of(args, name: str) -> int:
    return {"resnet18": args.width_resnet18, "wrn28": args.widen_wrn, "resnet50": args.width_resnet50}[name]


def training_example(model, x, y, eps, steps: int):
    """From a uniform start in the ball, ``steps`` signed steps, projected: one of 1.25 eps is Wong et al.'s
    FGSM-RS; several of 2.5 eps / steps each are a short PGD (Madry et al.'s step rule)."""
    step = 1.25 * eps if steps == 1 else 2.5 * eps / steps
    delta = (torch.rand_like(x) * 2 - 1) * eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)
        delta = (delta.detach() + step * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def trained(args, name: str) -> tuple[torch.nn.Module, str]:
    """The adversarially trained model ``name``, from the cache when it holds it; and a line saying how it was made."""
    side, width = side_of(name), width_of(args, name)
    imagenet = side == 224
    n_train = args.imagenet_train_images if imagenet else args.train_images
    epochs = args.imagenet_epochs if imagenet else args.epochs
    train_batch = args.imagenet_train_batch if imagenet else args.train_batch
    clean_epochs = args.imagenet_clean_epochs if imagenet else args.clean_epochs
    steps = args.imagenet_train_steps if imagenet else args.train_steps
    recipe = "FGSM-RS" if steps == 1 else f"PGD-{steps}"
    eps = EPS[side]
    torch.manual_seed(0)  # the initial weights
    model = scale_models.build(name, width).to(args.device)
    tag = "fgsmrs" if steps == 1 else f"pgd{steps}_"

    def path_after(adversarial: int) -> Path:  # the weights after all clean epochs and `adversarial` others
        return CACHE / (f"{name}_w{width}_n{n_train}_clean{clean_epochs}_{tag}{adversarial}_b{train_batch}"
                        "_adam.pt")

    how = (f"{clean_epochs} clean + {epochs} {recipe} epochs (eps {round(eps * 255)}/255) on {n_train} coloured "
           f"MNIST training digits, batch {train_batch}, Adam 2e-3")
    path = path_after(epochs)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location=args.device))
        print(f"{scale_models.label(name, width)}: loaded {path.relative_to(REPO)}", flush=True)
        return model.eval(), how + " (cached)"
    # Every epoch after the clean ones is cached, so a longer run resumes from a shorter one (Adam's moments
    # start again there).
    done = next((e for e in range(epochs - 1, 0, -1) if path_after(e).exists()), 0)
    if done:
        model.load_state_dict(torch.load(path_after(done), map_location=args.device))
        print(f"{scale_models.label(name, width)}: resuming from {path_after(done).relative_to(REPO)}", flush=True)
    data = stand_in("train", n_train, seed=0)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    started = time.perf_counter()
    for epoch in range(clean_epochs + epochs):
        order = torch.randperm(len(data), generator=generator)
        if done and epoch < clean_epochs + done:
            continue  # the shuffles of the cached epochs are drawn all the same, so later epochs see the same order
        total, correct, seen = 0.0, 0, 0
        for batch in order.split(train_batch):
            x, y = data.render(batch, side, args.device), data.y[batch].to(args.device)
            if epoch >= clean_epochs:  # clean first: from random weights FGSM-RS at once learns nothing
                model.eval()  # the example from the model as it stands, BN statistics untouched
                x = training_example(model, x, y, eps, steps)
            model.train()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        kind = recipe if epoch >= clean_epochs else "clean"
        print(f"{name} epoch {epoch} ({kind}): loss {total / seen:.3f}, training accuracy {correct / seen:.1%} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        if epoch >= clean_epochs:
            CACHE.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path_after(epoch - clean_epochs + 1))
    resumed = f", resumed after {done}" if done else ""
    return model.eval(), how + f" (trained in this run{resumed}: {time.perf_counter() - started:.0f} s)"


def accuracy(model, x, y, batch: int) -> float:
    with torch.no_grad():
        return sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
                   for i in range(0, len(x), batch)) / len(x)


def pgd(model, x, y, eps, steps, step, seed):
    """Hand-written L-inf PGD with a random start (``steps=1, step=eps`` without the start is FGSM)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    x_adv = x if steps == 1 else (x + (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps)
    x_adv = x_adv.clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = (x_adv.detach() + step * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    return x_adv.detach()


def attacked_accuracy(model, x, y, eps, steps, step, batch: int) -> float:
    return sum(int((model(pgd(model, x[i:i + batch], y[i:i + batch], eps, steps, step, i)).argmax(1)
                    == y[i:i + batch]).sum()) for i in range(0, len(x), batch)) / len(x)


# ------------------------------------------------------------------ measuring


def peak_rss_mib() -> float:
    """The process's peak resident set since the last :func:`reset_peak` (VmHWM), in MiB."""
    try:
        text = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    try:
        return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        return float("nan")


def reset_peak(device) -> bool:
    """Hand the allocator's free memory back (``malloc_trim``: otherwise an earlier run's freed heap stays in the
    RSS and hides the next run's own peak), then reset the peak RSS (and CUDA's peak); ``False`` where the kernel
    does not allow the reset (then the peak is the process's since it started)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Measure:
    wall: float = 0.0
    cpu: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    rss_start: float = 0.0
    rss_peak: float = 0.0
    cuda_peak: float | None = None
    reset: bool = True


@contextlib.contextmanager
def measured(device):
    record = Measure()
    import gc

    gc.collect()
    record.reset = reset_peak(device)
    record.rss_start = rss_mib()
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield record
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            record.cuda_peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
        record.wall, record.cpu = time.perf_counter() - wall, time.process_time() - cpu
        record.load = (load, os.getloadavg()[0])
        record.rss_peak = peak_rss_mib()


@dataclass
class Outcome:
    robust: float
    interval: tuple[float, float]
    measure: Measure
    stages: list[tuple[str, int, int, float]] = field(default_factory=list)  # name, attacked, broke, seconds
    attack_seconds: float | None = None
    flags: list[str] = field(default_factory=list)


def run_shieldkit(model, x, y, eps, batch_size, device) -> Outcome:
    import shieldkit as sk

    with tempfile.TemporaryDirectory() as out:
        with measured(device) as record:
            report = sk.evaluate(model, (x, y), eps=[eps], suite="standard", batch_size=batch_size, out_dir=out,
                                 quiet=True)
        defense = report.run.defenses[0]
    result = next(iter(defense.eps.values()))
    stages = [(f"{s.stage} {s.attack}", s.attacked, s.fooled, s.seconds) for s in result.attacks]
    flags = sorted({f"{c.check} ({c.mode})" for c in defense.checks if c.failed})
    return Outcome(result.adaptive, tuple(result.interval["adaptive"]), record, stages,
                   sum(s.seconds for s in result.attacks), flags)


def run_autoattack(model, x, y, eps, batch_size, device) -> Outcome:
    import torchattacks

    from shieldkit.evaluation.intervals import clopper_pearson

    attack = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    parts = attack._autoattack.attacks  # MultiAttack's APGD, APGDT, FAB, Square
    names = ("APGD-CE", "APGD-T", "FAB-T", "Square")
    calls: dict[str, list[float]] = {name: [0, 0.0] for name in names}
    for name, part in zip(names, parts):
        if hasattr(part, "steps"):
            part.steps = 100  # the paper's standard version; torchattacks builds them with 10

        def timed(images, labels, _forward=part.forward, _name=name):
            started = time.perf_counter()
            try:
                return _forward(images, labels)
            finally:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                calls[_name][0] += len(images)
                calls[_name][1] += time.perf_counter() - started

        part.forward = timed
    robust = 0
    with measured(device) as record:
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            adversarial = attack(xb, yb)
            with torch.no_grad():
                robust += int((model(adversarial).argmax(1) == yb).sum())
    attacked = [calls[name][0] for name in names]
    survivors = attacked[1:] + [robust]
    stages = [(name, attacked[i], attacked[i] - survivors[i] if attacked[i] else 0, calls[name][1])
              for i, name in enumerate(names)]
    return Outcome(robust / len(x), clopper_pearson(robust, len(x)), record, stages)


def resolve_batch_size(args, model, x) -> int:
    if args.batch_size != "auto":
        return min(args.batch_size, len(x))
    from shieldkit.infra.memory import auto_batch_size

    model.eval()
    return auto_batch_size(model, x[:8], limit=len(x))


# ------------------------------------------------------------------ streaming


def stream_folder(count: int) -> Path:
    """``count`` coloured MNIST test digits as 500x375 JPEGs in ``imagenet/val/<wnid>/`` under the cache."""
    from PIL import Image

    root = CACHE / f"imagenet-stand-in-{count}"
    folder = root / "imagenet" / "val"
    done = root / ".complete"
    if done.exists():
        return root
    digits = stand_in("test", count, seed=7)
    for label in range(10):
        (folder / f"n{label:08d}").mkdir(parents=True, exist_ok=True)
    for start in range(0, count, 100):
        index = torch.arange(start, min(start + 100, count))
        square = digits.render(index, 375)  # [B, 3, 375, 375]
        canvas = digits.background[index].expand(-1, 3, 375, 500).clone()
        canvas[:, :, :, 62:437] = square
        pixels = (canvas * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        for offset, i in enumerate(index.tolist()):
            Image.fromarray(pixels[offset]).save(folder / f"n{int(digits.y[i]):08d}" / f"img_{i:06d}.JPEG",
                                                 quality=90)
    done.write_text("ok\n")
    return root


def run_stream(args, model, count: int) -> dict:
    import shieldkit as sk
    from shieldkit.data import load

    root = stream_folder(count)
    try:
        data = load("imagenet", root=root)
    except Exception as error:  # noqa: BLE001 - the loader is new: say what happened and go on
        return {"error": f"shieldkit.data.load('imagenet') failed: {type(error).__name__}: {error}"}
    files = sum(path.stat().st_size for path in (root / "imagenet" / "val").rglob("*.JPEG"))
    batch = args.stream_batch
    with tempfile.TemporaryDirectory() as out:
        with measured(args.device) as record:
            report = sk.evaluate(model, data, attacks=["fgsm"], eps=[EPS[224]], batch_size=batch, out_dir=out,
                                 quiet=True, adaptive=False, checks=False)
        defense = report.run.defenses[0]
    result = next(iter(defense.eps.values()))
    return {"kind": type(data).__name__, "n": len(data), "files_mib": files / 2 ** 20,
            "decoded_mib": len(data) * 3 * 224 * 224 * 4 / 2 ** 20, "measure": record, "batch": batch,
            "clean": defense.clean_accuracy, "robust": result.adaptive}


# ------------------------------------------------------------------ the run


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def span(interval) -> str:
    return f"[{100 * interval[0]:.1f}-{100 * interval[1]:.1f}]"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from shieldkit.evaluation.intervals import disjoint

    begun = time.perf_counter()
    device = args.device
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    rows, details, checks = [], [], []
    resnet50 = None
    for number, name in enumerate(args.models):
        side, width = side_of(name), width_of(args, name)
        eps = EPS[side]
        label = scale_models.label(name, width)
        model, how = trained(args, name)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        if name == "resnet50":
            resnet50 = model
        n = {"resnet18": args.images_resnet18, "wrn28": args.images_wrn, "resnet50": args.images_resnet50}[name]
        test = stand_in("test", n, seed=0)
        x, y = test.render(torch.arange(len(test)), side, device), test.y.to(device)
        batch_size = resolve_batch_size(args, model, x)
        check_batch = min(batch_size, 64)
        clean = accuracy(model, x, y, check_batch)
        fgsm = attacked_accuracy(model, x, y, eps, 1, eps, check_batch)
        pgd10 = attacked_accuracy(model, x, y, eps, 10, eps / 4, check_batch)
        parameters = sum(p.numel() for p in model.parameters()) / 1e6
        checks.append(f"| {label} | {side}x{side} | {parameters:.1f} M | {round(eps * 255)}/255 | {how} | "
                      f"{clean:.1%} | {fgsm:.1%} | {pgd10:.1%} |")
        print(f"{label}: clean {clean:.1%}, FGSM {fgsm:.1%}, PGD-10 {pgd10:.1%} on {n} images; batch {batch_size}",
              flush=True)
        shieldkit_first = args.first == "shieldkit" or (args.first == "alternate" and number % 2 == 0)
        order = ("shieldkit", "autoattack") if shieldkit_first else ("autoattack", "shieldkit")
        outcomes = {}
        for which in order:
            run = run_shieldkit if which == "shieldkit" else run_autoattack
            outcomes[which] = run(model, x, y, eps, batch_size, device)
            found = outcomes[which]
            print(f"  {which}: {found.robust:.1%} {span(found.interval)} in {found.measure.wall:.0f} s "
                  f"(CPU {found.measure.cpu:.0f} s), peak RSS {found.measure.rss_peak:.0f} MiB", flush=True)
        sk, aa = outcomes["shieldkit"], outcomes["autoattack"]
        verdict = "no" if not disjoint(sk.interval, aa.interval) else "**yes**"
        for which, found in (("shieldkit `evaluate` (standard suite, defaults)", sk),
                             ("torchattacks AutoAttack (standard, 100 iterations)", aa)):
            m = found.measure
            attack_only = "" if found.attack_seconds is None else \
                f" ({found.attack_seconds:.0f} attacks only)"
            ratio = m.wall / aa.measure.wall
            ratio_text = f"{ratio:.2f}" if found is sk else "1.00"
            if found is sk and found.attack_seconds is not None:
                ratio_text += f" ({found.attack_seconds / aa.measure.wall:.2f} attacks only)"
            cpu_ratio = f"{m.cpu / aa.measure.cpu:.2f}" if found is sk else "1.00"
            order_note = order.index("shieldkit" if found is sk else "autoattack") + 1
            rows.append(
                f"| {label} | {which} | {n} | {found.robust:.1%} {span(found.interval)} | "
                f"{'' if found is aa else verdict} | {m.wall:.0f}{attack_only} | {n / m.wall:.2f} | {ratio_text} | "
                f"{m.cpu:.0f} | {cpu_ratio} | {mib(m.rss_peak)} (+{mib(m.rss_peak - m.rss_start)}) | "
                f"{mib(m.cuda_peak)} | {order_note} | {m.load[0]:.1f} / {m.load[1]:.1f} |")
        details.append((label, n, batch_size, sk, aa))
        del model, x, y
        if device.type == "cuda":
            torch.cuda.empty_cache()

    streams = []
    if args.stream_images:
        if resnet50 is None:
            resnet50, _ = trained(args, "resnet50")
            for parameter in resnet50.parameters():
                parameter.requires_grad_(False)
        # a quarter of the folder first: a peak that does not grow with the images is the streaming's signature
        for count in (max(1, args.stream_images // 4), args.stream_images):
            streams.append(run_stream(args, resnet50, count))
            print(f"streaming: {streams[-1]}", flush=True)
    total = time.perf_counter() - begun

    command = shlex.join(["python", "bench/bench_scale.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# Scale: shieldkit's standard suite vs torchattacks' AutoAttack (CIFAR- and ImageNet-shaped networks)",
        "",
        f"Command: `{command}`  ",
        f"Device: {device_name}; torch {torch.__version__}; profile `{args.profile}`; whole run "
        f"{total / 60:.1f} min.",
        "",
        "The models, trained by the bench on the coloured-MNIST stand-in (accuracies on the benchmark images):",
        "",
        "| model | input | parameters | eps (L-inf) | training | clean | FGSM | PGD-10 (step eps/4) |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: |",
        *checks,
        "",
        "| model | evaluation | images | robust accuracy [95% CI] | intervals disjoint | wall time (s) "
        "| images/s | time / AA | CPU time (s) | CPU time / AA | peak RSS MiB (+ over start) | peak CUDA MiB "
        "| ran | load before / after |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        *rows,
        "",
        "shieldkit's wall time is `evaluate` as a user calls it (diagnosis, masking checks, clean pass and reports "
        "included); \"attacks only\" is the sum of its attack units' seconds. \"ran\": 1 = first on that model. "
        "Peak RSS is the process's during that run, its freed heap handed back (malloc_trim) first; \"+ over start\" "
        "is what the run added. AutoAttack's \"broke first\" counts for APGD-CE include the images misclassified "
        "clean (MultiAttack attacks every image); shieldkit attacks only the clean-correct ones.",
    ]
    for label, n, batch_size, sk, aa in details:
        lines += ["", f"### {label}: where the time goes ({n} images, batch {batch_size})", "",
                  "| evaluation | stage / attack | attacked | broke first | seconds |",
                  "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| shieldkit | {stage} | {attacked} | {broke} | {seconds:.1f} |"
                  for stage, attacked, broke, seconds in sk.stages]
        rest = sk.measure.wall - (sk.attack_seconds or 0.0)
        lines.append(f"| shieldkit | diagnosis, checks, clean pass, reports | - | - | {rest:.1f} |")
        lines += [f"| AutoAttack | {stage} | {attacked} | {broke} | {seconds:.1f} |"
                  for stage, attacked, broke, seconds in aa.stages]
        if sk.flags:
            lines.append(f"\nFlags raised by shieldkit: {', '.join(sk.flags)}.")
    if streams:
        lines += ["", "### Streaming memory (ImageNet-size JPEG folders through `shieldkit.data.load(\"imagenet\")`)", ""]
        failed = [stream["error"] for stream in streams if "error" in stream]
        if failed:
            lines.append(f"Not measured: {failed[0]}")
        else:
            lines += [
                "| images | JPEG files (MiB) | decoded 3x224x224 float32 (MiB) | data object | suite | chunk "
                "| wall time (s) | images/s | peak RSS MiB (+ over start) | peak RSS / decoded size | clean / FGSM |",
                "| ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
            ]
            for stream in streams:
                m = stream["measure"]
                lines.append(
                    f"| {stream['n']} | {stream['files_mib']:.0f} | {stream['decoded_mib']:,.0f} | {stream['kind']} | "
                    f"fgsm (adaptive and checks off) | {stream['batch']} | {m.wall:.0f} | {stream['n'] / m.wall:.1f} | "
                    f"{mib(m.rss_peak)} (+{mib(m.rss_peak - m.rss_start)}) | "
                    f"{m.rss_peak / stream['decoded_mib']:.2f} | {stream['clean']:.1%} / {stream['robust']:.1%} |")
            small, large = streams[0], streams[-1]
            grew = large["measure"].rss_peak - small["measure"].rss_peak
            lines += ["", f"From {small['n']} to {large['n']} images the decoded size grows by "
                      f"{large['decoded_mib'] - small['decoded_mib']:,.0f} MiB; the peak RSS changes by {grew:+,.0f} MiB "
                      "(the peak is the model's activations on one chunk, not the data)."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
