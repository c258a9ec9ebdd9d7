"""``shieldkit train``: fit a trainer defence (adversarial training, logit pairing, ...) and save the model.

Runs the same in one process and under ``torchrun``::

    shieldkit train --defense adversarial_training:attack=pgd:eps=0.3 --model mnist_cnn --data mnist
    torchrun --nproc-per-node 4 -m shieldkit train --defense adversarial_training ...

Under ``torchrun`` every process joins the process group (nccl on CUDA, gloo
otherwise), the trainer's loop wraps the network in DistributedDataParallel and
draws each rank's samples with a DistributedSampler; ``--batch-size`` is per
process. Rank 0 alone writes the checkpoints (``out/checkpoints``, one per
epoch), ``out/model.pt`` (the state dict and the spec that rebuilds the
network, read with ``weights_only=True``: ``shieldkit evaluate --model
out/model.pt``) and ``out/train.json``. ``--resume`` continues from the last
checkpoint. Bad input fails before any compute with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from shieldkit.core.errors import EXIT_OK, SETUP_ERRORS, usage_error
from shieldkit.core.seeding import seeded

logger = logging.getLogger(__name__)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``shieldkit train``."""
    parser.description = ("Fit a trainer defence (adversarial_training, logit_pairing, distillation, ...) and save "
                          "the robust model; data-parallel (DDP) under torchrun.")
    parser.add_argument("--defense", required=True, metavar="DEFENSE",
                        help="a trainer defence with parameters, e.g. adversarial_training:attack=pgd:eps=0.3")
    parser.add_argument("--model", default="mnist_cnn",
                        help="a registered model name (fresh weights, seeded), a model file to fine-tune (torch.export "
                             ".pt2, TorchScript, an earlier model.pt) or a factory pkg.module:build, imported from "
                             "the current folder first, as python -m does (default: %(default)s)")
    parser.add_argument("--weights", metavar="FILE",
                        help="a state dict for the --model factory (default: none, the factory's fresh weights)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a --model file pickled whole with torch.save(model) (runs any code it holds)")
    parser.add_argument("--data", default="mnist",
                        help="a dataset name; its train split is used (default: %(default)s)")
    parser.add_argument("--train-samples", type=int, metavar="N",
                        help="train on a seeded subset of N samples (default: every sample of the train split)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the training data (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="per process (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="fixes the initial weights, the sample order and the attack's randomness "
                             "(default: %(default)s)")
    parser.add_argument("--out", metavar="DIR", default="shieldkit-runs/train",
                        help="model.pt, checkpoints/ and train.json go here (default shieldkit-runs/train)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars on a terminal, no progress lines (with the time left) elsewhere")


def run(args: argparse.Namespace) -> int:
    """Run ``shieldkit train``; returns the exit status."""
    from shieldkit.infra import distributed
    from shieldkit.infra.progress import progress_log

    distributed.init_from_env()  # under torchrun: join the process group (nothing otherwise)
    try:
        defense, fit_options = _defense(args.defense)
        out = _out_dir(args.out)
        with distributed.rank_zero_first():
            train_data, test_data = _data(args)
        model, spec = _model(args, train_data)
    except SETUP_ERRORS as error:
        return usage_error("train", error)
    if distributed.active() and not _uses_shared_loop(defense):
        logger.warning("%s does not use shieldkit's training loop: every process trains it alone (no DDP); "
                       "rank 0's model is saved", defense.name)
    device = distributed.device()
    options = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "checkpoint_dir": str(out / "checkpoints"), "resume": args.resume, "quiet": args.quiet,
               "device": str(device), **fit_options}
    started = time.perf_counter()
    with progress_log(args.quiet):  # off a terminal, a line per epoch in the bar's place
        fitted = defense.fit(model.to(device), train_data, **options)
    seconds = time.perf_counter() - started
    if distributed.is_main():
        from shieldkit.models import accuracy
        from shieldkit.models.files import save_model

        fitted = fitted.cpu().eval()
        test_accuracy = accuracy(fitted, test_data.x, test_data.y)
        save_model(fitted, out / "model.pt", spec)
        record = {"defense": defense.name, "params": defense.get_params(), "fit": options, "model": args.model,
                  "data": args.data, "train_samples": len(train_data), "world_size": distributed.world_size(),
                  "global_batch_size": args.batch_size * distributed.world_size(), "seconds": seconds,
                  "test_accuracy": test_accuracy}
        from shieldkit.evaluation.records import strict_json

        # strict JSON, as every record shieldkit writes: a non-finite number is null beside x_nonfinite
        (out / "train.json").write_text(json.dumps(strict_json(record), indent=2, default=repr, allow_nan=False)
                                        + "\n")
        print(f"{defense.name}: {len(train_data)} samples x {args.epochs} epoch(s) on {distributed.world_size()} "
              f"process(es) in {seconds:.1f} s; clean test accuracy {100 * test_accuracy:.1f}%")
        print(f"model: {out / 'model.pt'}  (shieldkit evaluate --model {out / 'model.pt'} ...)")
    return EXIT_OK  # the CLI waits for every rank before leaving the process group


def _defense(text: str):
    from shieldkit.core.defense import TrainerDefense
    from shieldkit.evaluation.config import parse_spec_string
    from shieldkit.plugins.registry import create_defense

    spec = parse_spec_string(text, "--defense")
    params = dict(spec.params)
    fit_options = {k: params.pop(k) for k in ("epochs", "batch_size", "lr") if k in params}
    defense = create_defense(spec.name, **params)  # unknown names and parameters fail here
    if not isinstance(defense, TrainerDefense):
        raise ValueError(f"--defense: {defense.name} is not a trainer defence (it is a {defense.kind}); "
                         "trainers: adversarial_training, logit_pairing, distillation, ...")
    return defense, fit_options


def _uses_shared_loop(defense) -> bool:
    from shieldkit.defenses.training import LoopTrainer

    return isinstance(defense, LoopTrainer)


def _out_dir(out: str | os.PathLike) -> Path:
    from shieldkit.evaluation.results import check_writable

    return check_writable(out)


def _data(args: argparse.Namespace):
    from shieldkit.data import load

    if args.train_samples is not None and args.train_samples < 1:
        raise ValueError(f"--train-samples must be >= 1, got {args.train_samples}")
    train = load(args.data, split="train")
    if args.train_samples is not None:
        train = train.subset(min(args.train_samples, len(train)), seed=args.seed)
    return train, load(args.data, split="test")


def _model(args: argparse.Namespace, data: Any) -> tuple[Any, dict[str, Any]]:
    """The starting model and the spec that rebuilds its network (saved with the trained weights): a
    model file, a factory with optional weights, or a registered model built for the data's shape with
    seeded initial weights."""

    from shieldkit.models.files import (
        build_with_weights,
        is_factory,
        load_model_file,
        looks_like_file,
    )
    from shieldkit.plugins.registry import create_model, model_info

    spec = args.model
    weights = getattr(args, "weights", None)
    if weights is not None and not is_factory(spec):
        raise ValueError("--weights: a state dict needs the factory that builds its network: "
                         "--model pkg.module:build --weights FILE")
    if looks_like_file(spec):
        model = load_model_file(spec, trust_pickle=getattr(args, "trust_pickle", False))
        return model, {"base": str(Path(spec).resolve())}
    if is_factory(spec):
        return build_with_weights(spec, weights), {"factory": spec, "kwargs": {}}
    params = model_info(spec)["params"]
    channels, height, width = data.shape
    sized = {"in_channels": channels, "num_classes": data.num_classes, "input_size": height,
             "in_features": channels * height * width}
    chosen = {k: v for k, v in sized.items() if k in params}
    with seeded(args.seed):  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
        return create_model(spec, **chosen), {"name": spec, "params": chosen}
