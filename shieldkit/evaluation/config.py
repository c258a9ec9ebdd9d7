"""Evaluation configuration: a TOML file, command-line flags or API arguments, all validated up front.

A run is described by one :class:`EvalConfig`. Its :meth:`~EvalConfig.identity`
(everything that changes a result) is hashed into ``config.json``; ``--resume``
refuses to continue a run whose identity differs.

TOML layout (every key optional; the defaults are the demo's)::

    out = "shieldkit-runs/mnist"
    eps = [0.1, 0.2, 0.3]     # or fractions: ["2/255", "8/255"], "8/255"; left out: the data's default grid
    norm = "linf"
    n = 500
    batch_size = 100
    seed = 0

    [model]
    name = "mnist_cnn"        # a registered model, trained once and cached ...
    epochs = 1
    # path = "model.pt2"      # ... or a model file (torch.export, TorchScript, shieldkit train's model.pt) ...
    # factory = "pkg.module:build"   # ... or a factory with a state dict
    # weights = "weights.pt"
    # kwargs = { width = 16 }        # the factory's arguments
    # normalize = { mean = [0.49, 0.48, 0.45], std = [0.25, 0.24, 0.26] }  # put Normalize in front
    # trust_pickle = true     # allow a pickled whole module (runs any code the file holds)

    [data]
    name = "mnist"            # a registered dataset ...
    split = "test"
    # path = "images.npz"     # ... or a .npz/.pt tensor file or an image folder (docs/evaluate.md)

    [[attacks]]
    name = "pgd"
    steps = 20

    [[defenses]]
    name = "jpeg"
    quality = 75

    [[defenses]]
    name = "adversarial_training"
    fit = { epochs = 1 }      # options for a trainer's fit (detectors: fpr)

``attacks`` and ``defenses`` may also be plain lists of names.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from shieldkit.core.component import jsonable
from shieldkit.core.errors import InvalidParameterError
from shieldkit.core.threat import check_norm, format_eps
from shieldkit.core.validation import check_bounds
from shieldkit.evaluation.presets import DEFAULT_SUITE, check_suite

#: The MNIST-like L-inf grid (:data:`DEFAULT_GRIDS`), the grid of every run before grids followed the data.
DEFAULT_EPS = (0.1, 0.2, 0.3)
#: The default grid per kind of image (:func:`image_kind`) and norm, used when no eps is given (:func:`default_eps`).
DEFAULT_GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "mnist": {"linf": DEFAULT_EPS, "l2": DEFAULT_EPS, "l1": (5.0, 10.0), "l0": (5.0, 10.0, 20.0)},
    "cifar": {"linf": (2 / 255, 4 / 255, 8 / 255), "l2": (0.25, 0.5), "l1": (6.0, 12.0), "l0": (10.0, 20.0, 40.0)},
    "imagenet": {"linf": (2 / 255, 4 / 255), "l2": (0.5, 1.0, 2.0), "l1": (30.0, 60.0), "l0": (50.0, 100.0, 200.0)},
}
#: The default output folder: the command and :func:`~shieldkit.evaluate` put each run given no folder in a new
#: sub-folder of it named by the time it starts (:func:`~shieldkit.evaluation.results.default_run_dir`).
DEFAULT_OUT = "shieldkit-runs/evaluate"
#: Keys of a component table that are not constructor parameters.
_SPEC_KEYS = ("name", "label", "fit")


@dataclass
class ComponentSpec:
    """One attack or defence of the suite: a registry name and its parameters.

    Args:
        name: registry name (``"pgd"``, ``"pgd.art"``) or ``"none"`` for no defence.
        params: constructor parameters.
        label: the name shown in tables; defaults to ``name`` (made unique by the runner).
        fit: options for a trainer's ``fit`` or a detector's ``fit`` (``fpr``).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    fit: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": _jsonable(self.params), "label": self.label, "fit": _jsonable(self.fit)}


#: the attacks' arithmetic precisions (``--precision``): the torch dtype each computes in under autocast
PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
#: ``batch_size = "auto"``: the largest chunk the device holds (``--batch-size auto``)
AUTO_BATCH_SIZE = "auto"


@dataclass
class EvalConfig:
    """Everything an evaluation run needs, as plain data (what ``config.json`` records).

    ``model`` and ``data`` describe how the CLI obtains them (``{"name": ...}`` or
    ``{"path": ...}``); the Python API passes objects instead and records their digests.
    """

    #: empty: the preset ``suite`` (:mod:`~shieldkit.evaluation.presets`) for the grid's norm
    attacks: list[ComponentSpec] = field(default_factory=list)
    suite: str = DEFAULT_SUITE
    defenses: list[ComponentSpec] = field(default_factory=lambda: [ComponentSpec("none")])
    #: the grid's budgets; ``None``: follow the data (:func:`default_eps`, resolved when the data is known)
    eps: list[float] | None = None
    norm: str = "linf"
    n: int | None = None
    #: samples per chunk; ``"auto"``: the largest that fits the GPU (:func:`~shieldkit.infra.memory.auto_batch_size`)
    batch_size: int | str = 100
    #: the attacks' arithmetic: ``"fp32"``, or ``"bf16"``/``"fp16"`` under autocast (judging stays in fp32)
    precision: str = "fp32"
    #: warn when a clean accuracy is under this share (as well as under twice chance); changes no result
    min_clean_accuracy: float | None = None
    seed: int = 0
    cascade: bool = True
    adaptive: bool = True
    eot: int = 8
    checks: bool = True
    examples: int = 6
    fpr: float = 0.05
    bounds: tuple[float, float] = (0.0, 1.0)
    out: str = DEFAULT_OUT
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """The settings that change results (``out`` does not), as JSON-able data."""
        record = asdict(self)
        record.pop("out")
        record.pop("min_clean_accuracy")  # a warning's threshold, not a result
        record["attacks"] = [_spec_record(s, "attacks") for s in self.attacks]
        record["defenses"] = [_spec_record(s, "defenses") for s in self.defenses]
        record["bounds"] = list(self.bounds)
        record["model"].pop("trust_pickle", None)  # how a file may be read, not what it holds
        return _jsonable(record)


def _spec_record(entry: Any, what: str) -> Any:
    try:
        return parse_spec(entry, what).to_dict()
    except InvalidParameterError:
        return f"<{type(entry).__name__}>"  # an Attack/Defense object: the runner records it


# ------------------------------------------------------------------ parsing


def parse_spec(entry: Any, what: str) -> ComponentSpec:
    """A :class:`ComponentSpec` from a name, a ``{"name": ..., **params}`` table or ``(name, params)``."""
    if isinstance(entry, ComponentSpec):
        return entry
    if isinstance(entry, str):
        return parse_spec_string(entry, what)
    if isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], dict):
        return ComponentSpec(entry[0], dict(entry[1]))
    if isinstance(entry, dict):
        if "name" not in entry or not isinstance(entry["name"], str):
            raise InvalidParameterError(f"{what}: every entry needs a string 'name', got {entry!r}")
        params = {k: v for k, v in entry.items() if k not in _SPEC_KEYS}
        fit = entry.get("fit", {})
        if not isinstance(fit, dict):
            raise InvalidParameterError(f"{what}: 'fit' of {entry['name']!r} must be a table, got {fit!r}")
        return ComponentSpec(entry["name"], params, str(entry.get("label", "")), dict(fit))
    raise InvalidParameterError(f"{what}: expected a name, a table with 'name' or (name, params), got {entry!r}")


def parse_spec_string(text: str, what: str) -> ComponentSpec:
    """``"pgd"`` or ``"pgd:steps=20:random_start=false"`` -> ComponentSpec."""
    name, *assignments = [part.strip() for part in text.split(":")]
    if not name:
        raise InvalidParameterError(f"{what}: empty name in {text!r}")
    params: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise InvalidParameterError(f"{what}: expected key=value after {name!r}, got {assignment!r} in {text!r}")
        params[key.strip()] = parse_value(value.strip())
    return ComponentSpec(name, params)


def parse_value(text: str) -> Any:
    """A command-line value as the TOML scalar it spells (int, float, bool, string)."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip("'\"")


def split_list(values: list[str] | str | None) -> list[str]:
    """Flags given as ``a,b c`` (commas or repeated words) -> ``["a", "b", "c"]``."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    items: list[str] = []
    for value in values:
        items += [part.strip() for part in value.split(",") if part.strip()]
    return items


def parse_eps(values: Any) -> list[float] | None:
    """Epsilons as researchers write them -> floats, sorted and unique; one-line errors for anything else.

    ``values`` is a number (``0.3``, ``8 / 255``), a string of one or more numbers or fractions
    separated by commas or spaces (``"8/255"``, ``"2/255,8/255"``, ``"0.5"``) or a list of either
    (``--eps 2/255 8/255`` gives ``["2/255", "8/255"]``; TOML ``eps = ["8/255", 0.5]``). A fraction
    ``a/b`` is exact (``float(Fraction(a) / Fraction(b))``: ``"8/255"`` is the float ``8 / 255``).
    ``None`` (no eps given) stays ``None``: the grid then follows the data (:func:`default_eps`).

    Raises:
        InvalidParameterError: a token that is not a number or a fraction, a division by zero, an
            epsilon that is not finite and > 0, or no epsilon at all; one line naming ``eps`` and the token.
    """
    if values is None:
        return None
    if isinstance(values, (str, bytes, int, float, Fraction, Mapping)) or not isinstance(values, Iterable):
        values = [values]
    tokens: list[Any] = []
    for value in values:
        tokens += re.sub(r"\s*/\s*", "/", value).replace(",", " ").split() if isinstance(value, str) else [value]
    if not tokens:
        raise InvalidParameterError("eps: give at least one epsilon")
    return sorted({_eps_value(token) for token in tokens})


def _eps_value(token: Any) -> float:
    """One epsilon: a number, or a string holding a number or a fraction ``a/b``."""
    if isinstance(token, str):
        numerator, slash, denominator = token.partition("/")
        try:
            if "/" in denominator:  # 8/255/2
                raise ValueError(token)
            # a fraction exactly; a decimal as float() reads it ("nan", "inf" too: refused below)
            number = float(Fraction(numerator) / Fraction(denominator)) if slash else float(token)
        except ZeroDivisionError:
            raise InvalidParameterError(f"eps: division by zero in {token!r}") from None
        except ValueError:
            raise InvalidParameterError(f"eps: {token!r} is not a number or a fraction such as 8/255") from None
    elif isinstance(token, bool) or token is None:
        raise InvalidParameterError(f"eps: expected numbers or fractions such as 8/255, got {token!r}")
    else:
        try:
            number = float(token)
        except (TypeError, ValueError):
            raise InvalidParameterError(f"eps: expected numbers or fractions such as 8/255, got {token!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise InvalidParameterError(f"eps: every epsilon must be finite and > 0, got {token!r}")
    return number


def image_kind(image_shape: tuple[int, int, int]) -> str:
    """Which default grid an image shape ``(C, H, W)`` gets: ``"mnist"`` (one channel, or no side above 28),
    ``"cifar"`` (colour, no side above 64) or ``"imagenet"`` (colour, larger)."""
    try:
        channels, height, width = (int(side) for side in image_shape)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"image_shape: expected (C, H, W), got {image_shape!r}") from None
    if min(channels, height, width) < 1:
        raise InvalidParameterError(f"image_shape: expected (C, H, W) of positive sizes, got {image_shape!r}")
    side = max(height, width)
    if channels == 1 or side <= 28:
        return "mnist"
    return "cifar" if side <= 64 else "imagenet"


def default_eps(norm: str, image_shape: tuple[int, int, int]) -> list[float]:
    """The grid a run gets when no eps is given: the budgets the literature reports for such images.

    ========================================  ======================  ===================  ==========  ============
    images (``image_shape`` = C, H, W)        linf                    l2                   l1          l0
    ========================================  ======================  ===================  ==========  ============
    MNIST-like: 1 channel, or sides <= 28     0.1, 0.2, 0.3           0.1, 0.2, 0.3        5, 10       5, 10, 20
    CIFAR-like: colour, sides <= 64           2/255, 4/255, 8/255     0.25, 0.5            6, 12       10, 20, 40
    ImageNet-like: colour, a side > 64        2/255, 4/255            0.5, 1, 2            30, 60      50, 100, 200
    ========================================  ======================  ===================  ==========  ============

    Sources: MNIST L-inf 0.3 is Madry et al. (2018); the MNIST-like L-inf and L2 grids are the grid every run
    had before the default followed the data (the L2 one kept so that earlier runs resume unchanged).
    RobustBench (Croce et al. 2021) benchmarks CIFAR-10 at L-inf 8/255 and L2 0.5, and ImageNet at L-inf
    4/255; the grids end there or one step past it (ImageNet L2 2.0 is a common larger budget).
    L1: 10 on MNIST as in Tramèr & Boneh (2019), 12 on CIFAR-10 as in Croce & Hein's l1-APGD (2021); the
    ImageNet L1 pair is our choice (five times CIFAR's). L0 counts changed coordinates: our choice, around
    :data:`~shieldkit.core.threat.DEFAULT_EPS`'s 10. A budget the whole pixel range of ``[0, 1]`` cannot
    reach at this size (L2, L1, L0 on a tiny image) is left out; if none is left, the largest reachable one.

    Args:
        norm: the grid's norm (``linf``, ``l2``, ``l1``, ``l0``; aliases as :func:`check_norm`).
        image_shape: one image's ``(C, H, W)`` (``ImageData.shape``).

    Returns:
        The budgets, sorted (floats; :func:`~shieldkit.core.threat.format_eps` shows them as ``8/255``).
    """
    norm = check_norm(norm, owner="eps")
    grid = DEFAULT_GRIDS[image_kind(image_shape)][norm]
    size = math.prod(int(side) for side in image_shape)
    limit = {"linf": 1.0, "l2": math.sqrt(size), "l1": float(size), "l0": float(size)}[norm]
    return sorted(value for value in grid if value <= limit) or [limit]


def check_eps(eps: list[float], norm: str, bounds: tuple[float, float], image_size: int | None = None) -> None:
    """Each eps finite, positive and no larger than the whole pixel range allows in ``norm``."""
    if eps is None:
        raise InvalidParameterError("eps: no grid to check yet; resolve it first with default_eps(norm, image_shape)")
    low, high = bounds
    span = high - low
    largest = {"linf": span}
    if image_size is not None:
        largest.update(l2=span * math.sqrt(image_size), l1=span * image_size, l0=float(image_size))
    for value in eps:
        if not math.isfinite(value) or value <= 0:
            raise InvalidParameterError(f"eps: every epsilon must be finite and > 0, got {value!r}")
        limit = largest.get(norm)
        if limit is not None and value > limit + 1e-12:
            raise InvalidParameterError(
                f"eps={format_eps(value)} is out of range for norm {norm} with bounds {tuple(bounds)}: the largest "
                f"meaningful budget is {limit:.4g}"
            )


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML file (tomllib on Python 3.11+, tomli before)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise InvalidParameterError(
                f"--config {path}: reading TOML needs Python 3.11 or the 'tomli' package (pip install tomli)"
            ) from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: no such file {str(path)!r}")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise InvalidParameterError(f"--config {path}: not valid TOML: {error}") from None


_TOP_KEYS = {
    "attacks", "suite", "defenses", "eps", "norm", "n", "batch_size", "seed", "cascade", "adaptive", "eot",
    "checks", "examples", "fpr", "bounds", "out", "model", "data", "precision", "min_clean_accuracy",
}


def config_from_mapping(mapping: dict[str, Any], base: EvalConfig | None = None) -> EvalConfig:
    """Apply a TOML-like mapping to ``base`` (the defaults when ``None``), checking every key."""
    config = base or EvalConfig()
    unknown = sorted(set(mapping) - _TOP_KEYS)
    if unknown:
        raise InvalidParameterError(
            f"config: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(sorted(_TOP_KEYS))}"
        )
    for key, value in mapping.items():
        if key in ("attacks", "defenses"):
            if isinstance(value, str):
                value = split_list(value)
            if not isinstance(value, list) or not value:
                raise InvalidParameterError(f"{key}: expected a non-empty list, got {value!r}")
            setattr(config, key, [parse_spec(v, key) for v in value])
        elif key == "eps":
            config.eps = parse_eps(value)
        elif key == "norm":
            config.norm = check_norm(value, owner="config")
        elif key in ("model", "data"):
            if isinstance(value, str):
                value = model_spec(value) if key == "model" else data_spec(value)
            if not isinstance(value, dict):
                raise InvalidParameterError(f"{key}: expected a table or a name, got {value!r}")
            value = dict(value)
            if key == "model" and "normalize" in value:
                value["normalize"] = parse_normalize(value["normalize"], "model.normalize")
            setattr(config, key, value)
        elif key == "suite":
            config.suite = check_suite(value)
        elif key == "bounds":
            config.bounds = check_bounds(value, "config")
        else:
            setattr(config, key, value)
    check_scalars(config)
    return config


def check_scalars(config: EvalConfig) -> None:
    """Types and ranges of the scalar settings."""
    def integer(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")

    integer("n", config.n, 1, allow_none=True)
    if config.batch_size != AUTO_BATCH_SIZE:
        integer("batch_size", config.batch_size, 1)
    floor = config.min_clean_accuracy
    if floor is not None and (isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 1):
        raise InvalidParameterError(f"min_clean_accuracy must be a share in [0, 1] (0.5 for 50%), got {floor!r}")
    if config.precision not in PRECISIONS:
        raise InvalidParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    integer("seed", config.seed, 0)
    integer("eot", config.eot, 1)
    integer("examples", config.examples, 0)
    for name in ("cascade", "adaptive", "checks"):
        if not isinstance(getattr(config, name), bool):
            raise InvalidParameterError(f"{name} must be true or false, got {getattr(config, name)!r}")
    if not isinstance(config.fpr, (int, float)) or not 0 < config.fpr < 1:
        raise InvalidParameterError(f"fpr must be a number in (0, 1), got {config.fpr!r}")
    if not isinstance(config.out, (str, os.PathLike)) or not str(config.out):
        raise InvalidParameterError(f"out must be a folder path, got {config.out!r}")


def model_spec(value: str) -> dict[str, Any]:
    """A ``--model`` argument as the ``[model]`` table: a file, a factory (``pkg.module:build``) or a name."""
    from shieldkit.models.files import is_factory, looks_like_file

    if looks_like_file(value):
        return {"path": value}
    return {"factory": value} if is_factory(value) else {"name": value}


def data_spec(value: str) -> dict[str, Any]:
    """A ``--data`` argument as the ``[data]`` table: an image folder, a tensor file or a dataset name."""
    from shieldkit.models.files import looks_like_file

    return {"path": value} if looks_like_file(value) else {"name": value}


def parse_normalize(value: Any, what: str = "--normalize") -> dict[str, list[float]]:
    """``"m1,m2,m3:s1,s2,s3"``, a dataset's name (``"cifar10"``, a key of
    :data:`~shieldkit.data.normalization.NORMALIZATIONS`) or a ``{mean, std}`` table
    -> ``{"mean": [...], "std": [...]}``, checked."""
    if isinstance(value, str):
        mean_text, sep, std_text = value.partition(":")
        if not sep:
            from shieldkit.data.normalization import NORMALIZATIONS, named_normalization

            named = named_normalization(value)
            if named is None:
                raise InvalidParameterError(f"{what}: expected MEAN:STD, e.g. 0.49,0.48,0.45:0.25,0.24,0.26, or a "
                                            f"dataset's name ({', '.join(NORMALIZATIONS)}), got {value!r}")
            value = named
        else:
            value = {"mean": split_list(mean_text), "std": split_list(std_text)}
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        raise InvalidParameterError(f"{what}: expected a table with mean and std, got {value!r}")
    parsed = {}
    for part in ("mean", "std"):
        numbers = value[part] if isinstance(value[part], list) else [value[part]]
        try:
            parsed[part] = [float(v) for v in numbers]
        except (TypeError, ValueError):
            raise InvalidParameterError(f"{what}: {part} must be numbers, got {value[part]!r}") from None
        if not parsed[part] or not all(math.isfinite(v) for v in parsed[part]):
            raise InvalidParameterError(f"{what}: {part} must be finite numbers, got {value[part]!r}")
    if any(v <= 0 for v in parsed["std"]):
        raise InvalidParameterError(f"{what}: std must be positive, got {parsed['std']}")
    if len(parsed["mean"]) != len(parsed["std"]) and 1 not in (len(parsed["mean"]), len(parsed["std"])):
        raise InvalidParameterError(f"{what}: {len(parsed['mean'])} means but {len(parsed['std'])} stds; "
                                    "give one of each per channel")
    return parsed


def digest(value: Any) -> str:
    """A short stable hash of JSON-able data."""
    text = json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    """JSON data for hashing and config.json: objects by type name, so the hash does not depend on a repr."""
    return jsonable(value, _type_name)


def _type_name(value: Any) -> Any:
    return value.to_dict() if isinstance(value, ComponentSpec) else f"<{type(value).__name__}>"

