"""``shieldkit evaluate``: the command line of the evaluation.

With no arguments it runs the demo (:mod:`shieldkit.evaluation.demo`) on the bundled
digits data. Otherwise it reads ``--config run.toml`` and lets flags override it.
Every check on the input (names, norms, epsilons, model and data files, the
output folder) runs before any compute; a failure prints one line and exits with
status 2. A failure during the run (a full disk, a file that vanished) prints one
line and exits with status 1; the rows already written are kept for ``--resume``.
Under ``torchrun`` every process joins the process group, rank 0 prepares (and
caches) the model first, the ranks share the chunks and rank 0 writes the run
(see docs/distributed.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shieldkit.core.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    SETUP_ERRORS,
    InvalidParameterError,
    UnknownNameError,
    usage_error,
)

if TYPE_CHECKING:
    from shieldkit.evaluation.suite import Setup

logger = logging.getLogger(__name__)

_SUITE_FLAGS = ("config", "model", "data", "attacks", "defenses")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``shieldkit evaluate``."""
    parser.description = ("Evaluate robustness: every attack naive and adaptive against every defence, worst case "
                          "per sample, with a gradient-masking checklist and an HTML report. With no arguments, "
                          "runs the demo suite on the bundled digits data.")
    parser.add_argument("--config", metavar="TOML", help="run configuration (flags given as well override it; "
                                                         "default: none, the flags and their defaults)")
    parser.add_argument("--model", help="a registered model name (trained once on the data's train split and "
                                        "cached), a model file (torch.export .pt2, TorchScript, shieldkit train's "
                                        "model.pt) or a factory pkg.module:build with --weights, imported from the "
                                        "current folder first, as python -m does (default: mnist_cnn; the demo: "
                                        "a narrow mnist_cnn)")
    parser.add_argument("--weights", metavar="FILE", help="a state dict (torch.save(model.state_dict(), FILE)) "
                                                         "for the --model factory (default: none; a factory "
                                                         "without it needs --random-weights)")
    parser.add_argument("--random-weights", action="store_true",
                        help="evaluate a --model factory's randomly initialised network (refused without "
                             "--weights otherwise)")
    parser.add_argument("--min-clean-accuracy", type=float, metavar="SHARE",
                        help="warn when a clean accuracy is under this share, e.g. 0.9 (default: only under twice "
                             "chance)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a --model file pickled whole with torch.save(model): unpickling runs any code "
                             "the file holds, so only for files you trust")
    parser.add_argument("--normalize", metavar="MEAN:STD|NAME",
                        help="put Normalize(mean, std) in front of your model, per channel, e.g. "
                             "0.49,0.48,0.45:0.25,0.24,0.26, or a dataset's conventional one: cifar10, cifar100, "
                             "imagenet (attacks stay in pixel space; default: none, the model sees pixels in "
                             "[0, 1])")
    parser.add_argument("--data", help="a dataset name (digits, mnist, fashion-mnist, cifar10, cifar100, imagenet, "
                                       "...), an image folder "
                                       "(one sub-folder per class) or a .npz/.pt file of x and y (default: digits, "
                                       "the demo's data, bundled with shieldkit)")
    parser.add_argument("--split", help="the data split to evaluate on (default: test)")
    parser.add_argument("--attacks", nargs="+", metavar="ATTACK",
                        help="attack names, comma- or space-separated; parameters as pgd:steps=20:random_start=false "
                             "(default: the --suite preset; the demo: its own list)")
    parser.add_argument("--suite", choices=("quick", "standard", "thorough"),
                        help="the preset attack suite when --attacks is not given: quick, standard (default; "
                             "AutoAttack's strength) or thorough")
    parser.add_argument("--defenses", nargs="+", metavar="DEFENSE",
                        help="defence names ('none' = undefended), parameters as jpeg:quality=50 (default: none, "
                             "the undefended model only; the demo: its own list)")
    parser.add_argument("--eps", nargs="+", metavar="EPS",
                        help="budgets, numbers or fractions, comma- or space-separated: 0.1,0.2,0.3 or --eps 8/255 "
                             "or --eps 2/255 4/255 8/255 (default: the data's grid, in L-inf 0.1,0.2,0.3 for "
                             "MNIST-like images, 2/255,4/255,8/255 for 32x32 colour ones (sides up to 64), "
                             "2/255,4/255 for larger colour ones; other norms: docs/evaluate.md; the demo: "
                             "0.1,0.2,0.3)")
    parser.add_argument("--norm", help="the grid's norm: linf (default), l2, l1, l0")
    parser.add_argument("--n", "--samples", dest="n", type=int,
                        help="evaluate a seeded random subset of this many samples (--samples under torchrun; "
                             "default: every sample of the split; the demo: 100)")
    parser.add_argument("--batch-size", type=_batch_size, metavar="N|auto",
                        help="samples per unit of work (default 100); auto: the largest chunk the GPU holds, "
                             "found by doubling (100 on a CPU)")
    parser.add_argument("--device", type=_device, metavar="DEVICE",
                        help="auto (default: cuda when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                        help="the attacks' arithmetic: fp32 (default), or bf16/fp16 under autocast; "
                             "predictions are judged in fp32")
    parser.add_argument("--seed", type=int, help="the run's seed (default 0)")
    parser.add_argument("--eot", type=int, help="random draws averaged against randomised defences (default 8; "
                                                "the demo: 4)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: a new sub-folder per run of "
                                                     "shieldkit-runs/evaluate, named by the time it starts, with a "
                                                     "'latest' link to it; the demo: shieldkit-runs/demo)")
    parser.add_argument("--full-grid", action="store_true", help="run every attack on every sample (no cascade)")
    parser.add_argument("--naive-only", action="store_true", help="skip the adaptive attacks (not recommended)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped (no "
                                                              "--out: the latest run of shieldkit-runs/evaluate)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars on a terminal, no progress lines (with the time left) elsewhere")


def run(args: argparse.Namespace) -> int:
    """Run ``shieldkit evaluate``; returns the exit status."""
    from shieldkit.evaluation.results import (
        DiskFullError,
        default_run_dir,
        discard_if_empty,
        mark_latest,
    )
    from shieldkit.evaluation.runner import Runner
    from shieldkit.infra import distributed
    from shieldkit.infra.progress import progress_log

    distributed.init_from_env()  # under torchrun: join the process group (nothing otherwise)
    default_out = None  # the run's own sub-folder of the default folder (no --out)
    try:
        # progress_log: a model or generator trained here (a fresh cache) says so per epoch in a log, as the run does
        with progress_log(args.quiet), distributed.rank_zero_first():  # trained and cached once, loaded by the others
            setup = prepare(args)
        if _default_out(args, setup.config):  # a new sub-folder per run (--resume: the latest), chosen by rank 0
            default_out = setup.config.out = str(default_run_dir(setup.config.out, resume=args.resume))
        if distributed.active():
            setup.model = setup.model.to(distributed.device())
        else:
            setup.model = place_model(setup.model, getattr(args, "device", None))
        runner = Runner(setup.config, setup.model, setup.data, train_data=setup.train_data, quiet=args.quiet,
                        resume=args.resume, suite=setup.suite)
    except SETUP_ERRORS as error:
        if default_out is not None:
            discard_if_empty(default_out)
        return usage_error("evaluate", error)
    if default_out is not None:
        mark_latest(default_out)
    try:
        with progress_log(args.quiet):
            report = runner.run()
    except DiskFullError as error:
        return run_failure("evaluate", error)
    except (InvalidParameterError, UnknownNameError) as error:  # the folder's lock, a resume of another run
        return usage_error("evaluate", error)
    except OSError as error:  # during the run, not a path the user named (those were checked up front)
        return run_failure("evaluate", error)
    if distributed.is_main():
        print(report.table())
        print(f"\nreport: {report.html_path}  (also report.md, summary.json, results.jsonl in {report.out_dir})")
    return EXIT_OK


def _batch_size(text: str) -> int | str:
    """``--batch-size``: a positive integer or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or auto, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or auto, got {text!r}")
    return value


def _device(text: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N, checked against this machine before anything is loaded."""
    import torch

    text = text.strip().lower()
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA device (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA devices")
    return text


def place_model(model, device: str | None):
    """``model`` on ``--device`` (auto: the first CUDA device when there is one), channels-last on a GPU where
    the model has convolutions (cuDNN's faster layout for them)."""
    import torch

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    if torch.device(device).type == "cuda" and any(p.dim() == 4 for p in model.parameters()):
        model = model.to(memory_format=torch.channels_last)
    return model


def run_failure(command: str, error: BaseException) -> int:
    """Print a failure during the run as one line; returns exit status 1."""
    print(f"shieldkit {command}: error: {error}", file=sys.stderr)
    return EXIT_FAILURE


def _default_out(args: argparse.Namespace, config) -> bool:
    """No --out and no ``out`` in the configuration file: the run goes to its own sub-folder of the default."""
    from shieldkit.evaluation.config import DEFAULT_OUT

    return args.out is None and not is_demo(args) and Path(config.out) == Path(DEFAULT_OUT)


def is_demo(args: argparse.Namespace) -> bool:
    return all(getattr(args, flag, None) in (None, []) for flag in _SUITE_FLAGS)


def prepare(args: argparse.Namespace) -> Setup:
    """Configuration, the resolved suite, data and model, checking the cheap things before the expensive ones."""
    from shieldkit.evaluation.config import check_eps
    from shieldkit.evaluation.results import check_writable
    from shieldkit.evaluation.suite import Setup, resolve_suite

    if is_demo(args):
        from shieldkit.evaluation import demo

        config = demo.demo_config()
        _apply_flags(config, args, demo=True)
        return demo.prepare(config, quiet=args.quiet)
    config = build_config(args)
    # Names, parameters, norms and budgets first: no data or model is needed to check them.
    suite = resolve_suite(config.attacks, config.defenses, config)
    if config.eps is not None:  # None: the grid follows the data, resolved and checked by the Runner
        check_eps(config.eps, config.norm, config.bounds)
    check_writable(config.out)
    if not config.data and config.model:  # the user's own model on the demo's data is rarely what they meant
        logger.warning("no --data: evaluating on the bundled digits (scikit-learn's 8x8 digits resized, the demo's "
                       "data); give --data for the data "
                       "your model was trained on")
    data_spec = dict(config.data) or {"name": "digits"}
    model_spec = dict(config.model) or {"name": "mnist_cnn"}
    if "path" in data_spec:  # before the model: a path without images is the problem, whatever the model
        check_data_path(data_spec["path"], data_spec.get("split", "test"))
    _check_model_spec(model_spec)
    if "name" in model_spec and "path" in data_spec:
        raise InvalidParameterError(f"--model {model_spec['name']}: a registered model is trained on a registered "
                                    "dataset; with your own --data give your own model (a file, or a factory with "
                                    "--weights)")
    data, train_data = load_data(data_spec, need_train=any(d.kind in ("trainer", "detector") for d in suite.defenses))
    model = load_model(model_spec, data_spec, quiet=args.quiet)
    return Setup(config, model, data, train_data, suite)


def build_config(args: argparse.Namespace):
    """The :class:`~shieldkit.evaluation.config.EvalConfig` of a (non-demo) run: ``--config``'s TOML, then the
    flags over it. ``eps`` stays ``None`` when neither gives one: the grid then follows the data."""
    from shieldkit.evaluation.config import EvalConfig, config_from_mapping, load_toml

    config = config_from_mapping(load_toml(args.config)) if args.config else EvalConfig()
    _apply_flags(config, args, demo=False)
    return config


def _apply_flags(config, args: argparse.Namespace, demo: bool) -> None:
    from shieldkit.core.threat import check_norm
    from shieldkit.evaluation.config import (
        check_scalars,
        data_spec,
        model_spec,
        parse_eps,
        parse_normalize,
        parse_spec,
    )

    if args.attacks and getattr(args, "suite", None):
        raise InvalidParameterError("--suite: give --attacks or --suite, not both")
    if args.attacks:
        config.attacks = [parse_spec(a, "--attacks") for a in _named_list(args.attacks, "--attacks", "attack name")]
    if getattr(args, "suite", None):
        config.suite, config.attacks = args.suite, []  # the demo's own list gives way to the preset too
    if args.defenses:
        config.defenses = [parse_spec(d, "--defenses") for d in _named_list(args.defenses, "--defenses",
                                                                            "defence name ('none': undefended)")]
    if args.eps:
        config.eps = parse_eps(args.eps)
    if args.norm:
        config.norm = check_norm(args.norm, owner="--norm")
    for flag, key in (("n", "n"), ("batch_size", "batch_size"), ("seed", "seed"), ("eot", "eot"), ("out", "out"),
                      ("precision", "precision")):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(config, key, value)
    if args.model:
        config.model = model_spec(args.model)
    if getattr(args, "weights", None):
        config.model = {**config.model, "weights": args.weights}
    if getattr(args, "random_weights", False):
        config.model = {**config.model, "random_weights": True}
    if getattr(args, "min_clean_accuracy", None) is not None:
        config.min_clean_accuracy = args.min_clean_accuracy
    if getattr(args, "trust_pickle", False):
        config.model = {**config.model, "trust_pickle": True}
    if getattr(args, "normalize", None):
        config.model = {**config.model, "normalize": parse_normalize(args.normalize, "--normalize")}
    if args.data:
        given = data_spec(args.data)
        # a file replaces the table's dataset and its options; a name keeps the options (root, ...)
        config.data = {**({} if "path" in given else config.data), **given}
    if args.split:
        config.data = {**config.data, "split": args.split}
    if args.full_grid:
        config.cascade = False
    if args.naive_only:
        config.adaptive = False
    if args.out is None and demo:
        config.out = "shieldkit-runs/demo"
    check_scalars(config)


def _named_list(values: list[str], flag: str, what: str) -> list[str]:
    """``--attacks``/``--defenses`` split at commas and spaces; an empty list (``--attacks ,``) is refused,
    where it would otherwise mean the flag's default (the whole preset suite)."""
    from shieldkit.evaluation.config import split_list

    names = split_list(values)
    if not names:
        raise InvalidParameterError(f"{flag}: expected at least one {what}, comma- or space-separated, "
                                    f"got {' '.join(values)!r}")
    return names


_MODEL_KEYS = {"name", "path", "factory", "weights", "random_weights", "kwargs", "trust_pickle", "normalize",
               "epochs", "n_train", "seed", "cache_dir"}


def _check_model_spec(spec: dict[str, Any]) -> None:
    """The model's table, its files and its factory, before any data is read or model trained."""
    from shieldkit.models.files import file_format, load_factory
    from shieldkit.plugins.registry import get_registry

    unknown = sorted(set(spec) - _MODEL_KEYS)
    if unknown:
        raise InvalidParameterError(f"model: unknown key{'s' if len(unknown) > 1 else ''} "
                                    f"{', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(_MODEL_KEYS))}")
    sources = [key for key in ("name", "path", "factory") if key in spec]
    if len(sources) != 1:
        raise InvalidParameterError(f"model: give one of 'name' (a registered model), 'path' (a model file) or "
                                    f"'factory' (pkg.module:build with weights), got {spec}")
    if "weights" in spec and "factory" not in spec:
        raise InvalidParameterError("--weights: a state dict needs the factory that builds its network: "
                                    "--model pkg.module:build --weights FILE")
    if "kwargs" in spec and not isinstance(spec["kwargs"], dict):
        raise InvalidParameterError(f"model.kwargs: expected a table of the factory's arguments, got {spec['kwargs']!r}")
    if "name" in spec:
        if "normalize" in spec:
            raise InvalidParameterError("--normalize: registered models are trained on pixels in [0, 1] (any "
                                        "normalisation is inside them); it is for your own model file or factory")
        get_registry().resolve("model", spec["name"])  # unknown names fail here, with suggestions
    elif "path" in spec:
        path = Path(spec["path"])
        if not path.is_file():
            raise FileNotFoundError(f"--model: no such file {spec['path']!r}")
        if file_format(path) == "pickle" and not spec.get("trust_pickle", False):
            from shieldkit.models.files import load_model_file

            load_model_file(path, trust_pickle=False)  # raises the refusal, naming the safe formats
    else:
        load_factory(spec["factory"], "--model")
        if "weights" not in spec and not spec.get("random_weights", False):
            raise InvalidParameterError(f"--model {spec['factory']}: a factory without --weights builds a randomly "
                                        "initialised network; give --weights FILE (its state dict), or "
                                        "--random-weights if an untrained network is what you mean to evaluate")
        if "weights" in spec and not Path(spec["weights"]).is_file():
            raise FileNotFoundError(f"--weights: no such file {spec['weights']!r}")


def check_data_path(path: str, split: str = "test") -> None:
    """A ``--data`` path holds what the loaders read, checked without reading a picture: a folder with one
    sub-folder of images per class (under ``<split>/`` where there is one), or a ``.npz``/``.pt`` file."""
    from shieldkit.data.folder import IMAGE_SUFFIXES, class_files
    from shieldkit.data.tensors import TENSOR_SUFFIXES

    found = Path(path).expanduser()
    if not found.exists():
        raise FileNotFoundError(f"--data: no such file or folder {path!r}")
    expected = (f"expected a folder with one sub-folder of images ({', '.join(IMAGE_SUFFIXES)}) per class, "
                f"optionally under train/ and test/, or a {'/'.join(TENSOR_SUFFIXES)} file of x and y")
    if found.is_file():
        if found.suffix.lower() not in TENSOR_SUFFIXES:
            raise InvalidParameterError(f"--data: {path!r} is not a data file; {expected}")
        return
    base = found / split if (found / split).is_dir() else found
    try:
        holds_images = bool(class_files(base)[1])
    except OSError as error:  # a folder we may not list (or a class folder inside it)
        raise InvalidParameterError(f"--data: cannot read the folder {path!r} ({error.strerror}); {expected}") from None
    if not holds_images:
        raise InvalidParameterError(f"--data: the folder {path!r} holds no images in class sub-folders; {expected}")


def load_data(spec: dict[str, Any], need_train: bool):
    """The evaluation split (and the train split when something must be fitted)."""
    from shieldkit.data import load

    spec = dict(spec)
    if "path" in spec:  # your own data: a folder of class sub-folders, or a tensor file
        path = Path(spec.pop("path")).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"--data: no such file or folder {str(path)!r}")
        if path.is_dir():
            spec = {"name": "image_folder", "size": None, "channels": None, **spec, "root": str(path)}
        else:
            spec = {"name": "tensor_file", **spec, "path": str(path)}
    options = {k: v for k, v in spec.items() if k not in ("name", "split")}
    name = spec.get("name", "digits")
    data = load(name, split=spec.get("split", "test"), **options)
    train = load(name, split="train", **options) if need_train else None
    return data, train


def load_model(spec: dict[str, Any], data_spec: dict[str, Any], quiet: bool = True):
    """A model file, a factory with its weights, or a registered model trained on the data's train split
    (cached); with ``normalize``, ``Normalize(mean, std)`` in front."""
    from shieldkit.models.files import build_with_weights, load_model_file

    if "path" in spec:
        model = load_model_file(spec["path"], trust_pickle=bool(spec.get("trust_pickle", False)))
    elif "factory" in spec:
        model = build_with_weights(spec["factory"], spec.get("weights"), spec.get("kwargs"))
    else:
        from shieldkit.models.cache import pretrained

        options = {k: spec[k] for k in ("epochs", "n_train", "seed", "cache_dir") if k in spec}
        return pretrained(spec["name"], data=data_spec.get("name", "digits"), quiet=quiet,
                          root=data_spec.get("root"), **options)
    if "normalize" in spec:
        from torch import nn

        from shieldkit.core.layers import Normalize

        model = nn.Sequential(Normalize(spec["normalize"]["mean"], spec["normalize"]["std"]), model).eval()
    return model
