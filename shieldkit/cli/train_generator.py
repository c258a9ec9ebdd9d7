"""``shieldkit train-generator``: train a VAE, WGAN-GP or DCGAN generator with checkpoints and a sample grid.

Example::

    shieldkit train-generator --data mnist --arch wgan_gp --steps 20000 --out runs/wgan
    shieldkit train-generator --data mnist --arch wgan_gp --steps 40000 --out runs/wgan --resume
"""

from __future__ import annotations

import argparse
import inspect
import logging
from pathlib import Path

from shieldkit.gan.generators import ARCHITECTURES
from shieldkit.gan.objectives import DEFAULTS

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``shieldkit train-generator``."""
    parser.add_argument("--data", default="mnist",
                        help="a registered dataset (mnist, fashion_mnist, ...; default: %(default)s)")
    parser.add_argument("--arch", default="vae", choices=sorted(ARCHITECTURES),
                        help="vae (fast, CPU-friendly), wgan_gp (Defense-GAN's generator) or dcgan "
                             "(default: %(default)s)")
    parser.add_argument("--steps", type=int, required=True, help="generator updates in total")
    parser.add_argument("--out", required=True, help="folder for checkpoint.pt, generator.pt and samples.png")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"samples per step (default: the architecture's: {_per_arch('batch_size')})")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"Adam's learning rate (default: the architecture's: {_per_arch('lr')})")
    parser.add_argument("--latent-dim", type=int, default=None,
                        help=f"size of the latent vector (default: the architecture's: {_per_arch('latent_dim')})")
    parser.add_argument("--checkpoint-every", type=int, default=500, metavar="N",
                        help="save a checkpoint every N steps (default: %(default)s)")
    parser.add_argument("--n-train", type=int, default=None, metavar="N",
                        help="train on a random subset of N images (default: every image of the train split)")
    parser.add_argument("--seed", type=int, default=0,
                        help="fixes the weights, the batch order and the training noise (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--data-root", default=None, help="the data folder (default: $SHIELDKIT_DATA)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar on a terminal, no progress lines (with the time left) elsewhere")


def _per_arch(name: str) -> str:
    """Each architecture's default of a training setting or generator argument, read from the code (``128 vae, 50
    wgan_gp, ...``) so that the help cannot drift from it."""
    defaults = {}
    for arch, (generator, _) in ARCHITECTURES.items():
        value = DEFAULTS[arch].get(name, inspect.signature(generator).parameters.get(name))
        defaults[arch] = value.default if isinstance(value, inspect.Parameter) else value
    return ", ".join(f"{value:g} {arch}" for arch, value in defaults.items() if value is not None)


def run(args: argparse.Namespace) -> int:
    """Train the generator; print where its files are. Returns the exit code."""
    from shieldkit.data import load
    from shieldkit.gan.train import CHECKPOINT, GENERATOR_FILE, SAMPLES, train_generator
    from shieldkit.infra.progress import progress_log

    data = load(args.data, split="train", root=args.data_root)
    if args.n_train is not None:
        if args.n_train < 1:
            from shieldkit.core.errors import InvalidParameterError

            raise InvalidParameterError(f"train-generator: --n-train must be >= 1, got {args.n_train}")
        data = data.subset(min(args.n_train, len(data)), seed=args.seed)
    generator_params = {} if args.latent_dim is None else {"latent_dim": args.latent_dim}
    with progress_log(args.quiet):  # off a terminal, a line every tenth of the steps in the bar's place
        train_generator(
            args.arch, data, steps=args.steps, batch_size=args.batch_size, lr=args.lr, out=args.out,
            resume=args.resume, checkpoint_every=args.checkpoint_every, quiet=args.quiet, seed=args.seed,
            device=args.device, generator_params=generator_params,
        )
    out = Path(args.out)
    print(f"generator: {out / GENERATOR_FILE}\ncheckpoint: {out / CHECKPOINT}\nsamples: {out / SAMPLES}")
    return 0
