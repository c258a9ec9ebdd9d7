"""The built-in ``art`` plugin: ART's evasion attacks and defences on PyTorch image classifiers, by name.

The table at the end of this module lists the Adversarial Robustness Toolbox
evasion attacks that run against a ``PyTorchClassifier`` on images, with their
capabilities, the translation of shieldkit's uniform parameters to ART's
constructor arguments and their :class:`ArtOptions`: one row per family, each an
:class:`~shieldkit.backends.AttackSpec` that
:func:`~shieldkit.backends.make_attack_class` turns into an
:class:`~shieldkit.Attack` subclass named after it (``PgdArt``); :data:`ATTACKS`
lists them in registration order. ART's defences are adapted in
:mod:`shieldkit.backends._art_defenses` and re-exported here under the names
their classes carry (``shieldkit.backends.art.JpegArt``).

ART is imported only when an attack runs. Its estimator is built lazily, once
per model (input shape, number of classes from one forward pass, clip values
from ``bounds``, device) and cached in a ``WeakKeyDictionary``. The estimator
holds the model through a weak reference, so ART never switches the user's
model between train and eval mode and the cache never keeps a model alive.
NumPy exists only inside this backend.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from shieldkit.backends import (
    AttackSpec,
    BackendAttack,
    BackendOptions,
    Param,
    count_classes,
    count_param,
    from_numpy,
    init_keywords,
    is_available,
    library_class,
    make_attack_class,
    require,
    seeded_call,
    step_size_param,
    to_numpy,
)

# The defence classes are defined in _art_defenses and named shieldkit.backends.art.<Class>, like the
# attacks: re-exported here under those names.
from shieldkit.backends._art_defenses import (  # noqa: F401 (re-exported)
    DEFENSES,
    AdversarialTrainingArt,
    AwpArt,
    BitDepthArt,
    ClassLabelsArt,
    CutmixArt,
    CutoutArt,
    FastAdversarialTrainingArt,
    GaussianAugmentationArt,
    GaussianNoiseArt,
    GaussianNoisePostArt,
    HighConfidenceArt,
    JpegArt,
    LabelSmoothingArt,
    MadryPgdArt,
    MedianSmoothingArt,
    MixupArt,
    ReverseSigmoidArt,
    RoundingArt,
    ThermometerEncodingArt,
    TotalVariationArt,
    TradesArt,
    art_classifier,
)
from shieldkit.core.errors import MissingDependencyError
from shieldkit.core.validation import model_device
from shieldkit.plugins.hookspecs import hookimpl

logger = logging.getLogger("shieldkit.backends.art")

LIBRARY = "art"
NORM_VALUES = {"linf": math.inf, "l2": 2, "l1": 1}
LAYOUTS = ("nchw", "nhwc", "flat")


@dataclass(frozen=True, kw_only=True)
class ArtOptions(BackendOptions):
    """Behaviour flags of an ART row (``options=ArtOptions(...)``), read by :class:`ArtAttack`.

    Besides :class:`~shieldkit.backends.BackendOptions`' ``rgb`` and ``untargeted_next``:

    Attributes:
        module: the module the ART class is imported from (for classes ``art.attacks.evasion`` does not export).
        fix: the known ART bug worked around by a subclass (a key of ``_FIXES``; see docs/backends.md).
        probabilities: the estimator outputs softmax probabilities (for attacks that require them).
        layout: the input layout ART gets: ``"nchw"``, ``"nhwc"`` (channels last) or ``"flat"`` (feature vectors).
        index_labels: labels go to ART as class indices instead of one-hot rows.
        per_sample: ART is called one image at a time.
        eps_interval: ``eps`` goes to ART as the interval ``(-eps, eps)``.
        eps_255: ``eps`` goes to ART as an integer threshold in 1..255 of the pixel range.
        net_size: ART gets the image size ``(width, height)`` as ``net_size``.
        uniform_importance: ART gets a uniform feature importance as ``importance``.
        quiet_attacker: the inner ``attacker`` runs with ``verbose=False`` (except FGSM, which has no such keyword).
        ensemble: AutoAttack: ART's default ensemble, built with this instance's budgets.
        patch: ART generates a patch, which is then applied to the images at ``scale``.
        placeholder_module: a module ART imports without using it here; when it is not installed, a placeholder
            stands in for the duration of the call.
        seed_random_state: during the call an unseeded ``np.random.RandomState()`` takes its seed from NumPy's
            (seeded) global RNG.
        numpy1_aliases: ``np.mat`` and ``np.asfarray`` (removed in NumPy 2) exist for the duration of the call.
    """

    module: str = "art.attacks.evasion"
    fix: str | None = None
    probabilities: bool = False
    layout: str = "nchw"
    index_labels: bool = False
    per_sample: bool = False
    eps_interval: bool = False
    eps_255: bool = False
    net_size: bool = False
    uniform_importance: bool = False
    quiet_attacker: bool = False
    ensemble: bool = False
    patch: bool = False
    placeholder_module: str | None = None
    seed_random_state: bool = False
    numpy1_aliases: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layout not in LAYOUTS:
            raise ValueError(f"ArtOptions: layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.fix is not None and self.fix not in _FIXES:
            raise ValueError(f"ArtOptions: unknown fix {self.fix!r}; known: {', '.join(_FIXES)}")


# ------------------------------------------------------------------ estimators


class _ModelRef(nn.Module):
    """What ART's estimator holds: the model behind a weak reference, plus the input adapters.

    ART calls ``train()``/``eval()`` and ``zero_grad()`` on this module, never on the
    user's model; counting hooks on the model still see every forward pass.

    ART feeds float32 (NumPy has no bfloat16, and ART's own arrays are float32): each
    input is rounded to the model's ``dtype`` and a half-precision model's outputs
    come back in float32, so ART computes its losses and steps in float32 while the
    model computes exactly as on half-precision images.
    """

    def __init__(self, model: nn.Module, *, dtype: torch.dtype, probabilities: bool, layout: str,
                 grey: bool, image_shape: tuple[int, ...]):
        super().__init__()
        self.__dict__["_model"] = weakref.ref(model)
        self.dtype, self.probabilities, self.layout, self.grey = dtype, probabilities, layout, grey
        self.image_shape = image_shape
        # Some ART attacks read the device (and dtype) from ``next(model.parameters())``: an empty one says where.
        self.device_marker = nn.Parameter(torch.empty(0, device=model_device(model), dtype=_art_dtype(dtype)),
                                          requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        model = self.__dict__["_model"]()
        if model is None:
            raise RuntimeError("the model behind this ART estimator no longer exists")
        x = x.to(self.dtype)
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        elif self.layout == "flat":
            x = x.reshape(-1, *self.image_shape)
        if self.grey:
            x = x.mean(dim=1, keepdim=True)
        logits = model(x).to(_art_dtype(self.dtype))
        return logits.softmax(dim=1) if self.probabilities else logits


#: Dtypes ART does not compute in (NumPy has no bfloat16; float16 losses underflow): it gets float32.
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _art_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype ART's side of the estimator computes in for a model computing in ``dtype``."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


_ESTIMATORS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def estimator_for(model: nn.Module, x: Tensor, bounds: tuple[float, float], *, probabilities: bool = False,
                  layout: str = "nchw", grey: bool = False) -> Any:
    """ART's ``PyTorchClassifier`` for ``model`` on images shaped like ``x``, built once and cached.

    Args:
        model: the classifier (logits out).
        x: a batch ``[B, C, H, W]`` on the model's device, for the input shape and one forward pass.
        bounds: pixel range, ART's ``clip_values``.
        probabilities: the estimator outputs softmax probabilities (for attacks that require them).
        layout: ``"nchw"``, ``"nhwc"`` (ART's channels-last attacks) or ``"flat"`` (feature vectors).
        grey: present a grey model as a three-channel one (the model sees the channel mean).
    """
    channels, height, width = x.shape[1:]
    if grey:
        channels = 3
    shape = {"nchw": (channels, height, width), "nhwc": (height, width, channels),
             "flat": (channels * height * width,)}[layout]
    # The parameters' identities and shapes are in the key: a model whose head was replaced gets a new
    # estimator (ART keeps the number of classes it was built with).
    layers = tuple((id(p), tuple(p.shape)) for p in model.parameters())
    key = (shape, layout, grey, probabilities, tuple(bounds), str(x.device), x.dtype, layers)
    cached = _ESTIMATORS.setdefault(model, {})
    if key in cached:
        return cached[key]
    for stale in [k for k in cached if k[-1] != layers]:
        del cached[stale]
    nb_classes = count_classes(model, x)
    ref = _ModelRef(model, dtype=x.dtype, probabilities=probabilities, layout=layout, grey=grey,
                    image_shape=(channels, height, width))
    with torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext():
        estimator = art_classifier(ref, shape, nb_classes, bounds, x.device, channels_first=(layout != "nhwc"))
    cached[key] = estimator
    return estimator


# ------------------------------------------------------------ ART's classes and workarounds


def _library_class(options: ArtOptions, name: str) -> type:
    cls = library_class(options.module, name)
    return _FIXES[options.fix](cls) if options.fix else cls


def _float_mean_value(cls: type) -> type:
    """ART 1.20: AdversarialPatchNumpy.__init__ passes a NumPy float32 to reset_patch, which accepts only
    Python floats and then fails; the subclass converts it."""

    def reset_patch(self, initial_patch_value=None):
        if initial_patch_value is not None and not isinstance(initial_patch_value, (float, list, tuple)) \
                and getattr(initial_patch_value, "ndim", 1) == 0:
            initial_patch_value = float(initial_patch_value)
        cls.reset_patch(self, initial_patch_value)

    return type(cls.__name__, (cls,), {"reset_patch": reset_patch, "__module__": __name__})


#: Known ART bugs worked around by subclassing (``ArtOptions.fix``; see docs/backends.md).
_FIXES: dict[str, Callable[[type], type]] = {"float_mean_value": _float_mean_value}


@contextlib.contextmanager
def _placeholder_module(name: str) -> Iterator[None]:
    """Let ``import name`` succeed inside ART when the module is absent but not actually used.

    ART's AutoAttack imports ``multiprocess`` unconditionally although it uses it only with
    ``parallel_pool_size > 0`` (never here); any use of the placeholder raises.
    """
    if is_available(name):
        yield
        return

    class _Placeholder(types.ModuleType):
        def __getattr__(self, attribute: str) -> Any:
            raise MissingDependencyError(f"{name} is not installed (needed only for ART's parallel AutoAttack)")

    sys.modules[name] = _Placeholder(name)
    try:
        yield
    finally:
        sys.modules.pop(name, None)


@contextlib.contextmanager
def _numpy1_aliases() -> Iterator[None]:
    """Provide ``np.mat`` and ``np.asfarray`` (removed in NumPy 2.0) while an ART attack that still uses them runs.

    Both were plain aliases in NumPy 1 (of ``np.asmatrix`` and of ``np.asarray`` with a float dtype);
    they are removed again afterwards, so code that runs on NumPy 2 sees no difference.
    """
    import numpy as np

    aliases = {"mat": np.asmatrix, "asfarray": lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)}
    added = [name for name in aliases if name not in np.__dict__]
    for name in added:
        setattr(np, name, aliases[name])
    try:
        yield
    finally:
        for name in added:
            delattr(np, name)


@contextlib.contextmanager
def _seeded_random_states() -> Iterator[None]:
    """Make ``np.random.RandomState()`` without a seed draw its seed from NumPy's (seeded) global RNG.

    ART's HopSkipJump, Boundary and Brendel-Bethge attacks create such generators, seeded from the
    operating system, for their starting points; this keeps them reproducible under ``seed``.
    """
    import numpy as np

    original = np.random.RandomState

    class SeededRandomState(original):  # type: ignore[misc, valid-type]
        def __init__(self, seed=None):
            super().__init__(np.random.randint(0, 2**31 - 1) if seed is None else seed)

    np.random.RandomState = SeededRandomState
    try:
        yield
    finally:
        np.random.RandomState = original


# ---------------------------------------------------------------------- attacks


class ArtAttack(BackendAttack):
    """An attack run by ART (the generated classes below subclass this)."""

    options_type = ArtOptions

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        import numpy as np

        spec, options = self.spec, self.spec.options
        grey = self._grey(x)
        layout = options.layout
        estimator = estimator_for(model, x, self.bounds, probabilities=options.probabilities,
                                  layout=layout, grey=grey)
        num_classes = estimator.nb_classes
        target = self._target(y, target, num_classes)

        cls = _library_class(options, spec.class_for(self))
        kwargs = self._art_kwargs(estimator, x, target, init_keywords(cls))

        inputs = x.expand(-1, 3, -1, -1) if grey else x
        if layout == "nhwc":
            inputs = inputs.permute(0, 2, 3, 1)
        elif layout == "flat":
            inputs = inputs.reshape(x.shape[0], -1)
        x_np = np.ascontiguousarray(to_numpy(inputs.float()))  # NumPy has no bfloat16
        labels = (target if target is not None else y).cpu().numpy()
        y_np = labels if options.index_labels else np.eye(num_classes, dtype=np.float32)[labels]

        with contextlib.ExitStack() as stack:
            stack.enter_context(seeded_call(self, x.device)[1])
            if options.placeholder_module:
                stack.enter_context(_placeholder_module(options.placeholder_module))
            if options.seed_random_state:
                stack.enter_context(_seeded_random_states())
            if options.numpy1_aliases:
                stack.enter_context(_numpy1_aliases())
            attack = cls(estimator, **kwargs)
            if options.per_sample:
                x_adv = np.concatenate([attack.generate(x_np[i:i + 1], y=y_np[i:i + 1]) for i in range(len(x_np))])
            else:
                x_adv = attack.generate(x_np, y=y_np)
            if options.patch:
                x_adv = attack.apply_patch(x_np, scale=self.scale)

        low_precision = x.dtype in LOW_PRECISION
        x_adv = from_numpy(x_adv, x.float() if low_precision else x)
        if layout == "nhwc":
            x_adv = x_adv.permute(0, 3, 1, 2)
        if grey:
            x_adv = x_adv.mean(dim=1, keepdim=True)
        x_adv = x_adv.reshape(x.shape)
        if low_precision:  # ART's float32 result, rounded to the input's dtype inside the ball
            return self.threat.cast_inside(x_adv, x)
        return x_adv  # the base class projects it onto the threat model

    def _art_kwargs(self, estimator: Any, x: Tensor, target: Tensor | None, accepted: Mapping) -> dict[str, Any]:
        """The ART constructor's keywords: the translated parameters plus what the run determines."""
        import numpy as np

        spec, options = self.spec, self.spec.options
        kwargs = self.library_kwargs()
        if spec.norm_arg is not None:
            kwargs[spec.norm_arg] = NORM_VALUES[self.norm]
        if options.eps_interval and self.eps is not None:
            kwargs[spec.eps_arg] = (-kwargs[spec.eps_arg], kwargs[spec.eps_arg])
        if options.eps_255 and self.eps is not None:
            low, high = self.bounds
            kwargs[spec.eps_arg] = max(1, int(self.eps / (high - low) * 255 + 1e-6))
        if "targeted" in accepted:
            kwargs["targeted"] = target is not None
        if "verbose" in accepted:
            kwargs.setdefault("verbose", False)
        if "batch_size" in accepted:
            kwargs.setdefault("batch_size", x.shape[0])
        if options.net_size:
            kwargs["net_size"] = (x.shape[3], x.shape[2])
        if options.uniform_importance:
            features = int(np.prod(estimator.input_shape))
            kwargs["importance"] = np.full(features, 1.0 / features, dtype=np.float32)
        if options.quiet_attacker and kwargs.get("attacker") != "fgsm":
            kwargs["attacker_params"] = {"verbose": False}
        if options.ensemble:
            kwargs["attacks"] = self._ensemble(estimator)
        return kwargs

    def _ensemble(self, estimator: Any) -> list:
        """ART's default AutoAttack ensemble, with this instance's budgets."""
        from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool, SquareAttack

        norm = NORM_VALUES[self.norm]
        kwargs = self.library_kwargs()
        apgd = dict(norm=norm, eps=self.eps, eps_step=kwargs.get("eps_step"), max_iter=self.steps,
                    targeted=False, nb_random_init=self.restarts, verbose=False)
        attacks = [
            AutoProjectedGradientDescent(estimator, loss_type="cross_entropy", **apgd),
            AutoProjectedGradientDescent(estimator, loss_type="difference_logits_ratio", **apgd),
            DeepFool(estimator, max_iter=self.steps, epsilon=1e-3, nb_grads=10, verbose=False),
        ]
        if self.norm in ("linf", "l2"):
            attacks.append(SquareAttack(estimator, norm=norm, max_iter=self.queries, eps=self.eps,
                                        p_init=0.8, nb_restarts=self.restarts, verbose=False))
        return attacks


def _attack(spec: AttackSpec) -> type[ArtAttack]:
    """The class for one row of the table, named ``<Family>Art`` (``hop_skip_jump``: ``HopSkipJumpArt``)."""
    return make_attack_class(spec, ArtAttack, LIBRARY, __name__)


# Parameter rows shared by several attacks (data: library keyword, default, rule, doc).
_steps = partial(count_param, lib="max_iter")
_step_size = partial(step_size_param, lib="eps_step", pixel=False)
_CONFIDENCE = Param("confidence", 0.0, "nonneg", "margin required over the runner-up class")
_LEARNING_RATE = Param("learning_rate", 0.01, "pos", "learning rate")
_RANDOM_START = Param("num_random_init", False, "bool", "start from a uniform draw in the eps-ball",
                      values={True: 1, False: 0})
_APGD_LOSS = Param("loss_type", "ce", ("ce", "dlr"), "objective: cross-entropy or Difference of Logits Ratio",
                   values={"ce": "cross_entropy", "dlr": "difference_logits_ratio"})
#: The parameters of SimBA (pixel and DCT directions).
_SIMBA = {"queries": count_param(3000, "max_iter", "iterations (at most two queries each)"),
          "step_size": Param("epsilon", 0.1, "pos", "size of each coordinate step"),
          "order": Param("order", "random", ("random", "diag"), "coordinate order")}
#: The parameters of Auto-PGD and its conjugate-gradient variants.
_AUTO_PGD = {"steps": _steps(10), "step_size": _step_size(2.0),
             "restarts": Param("nb_random_init", 1, "int", "random restarts"), "loss": _APGD_LOSS}

_CROCE_HEIN = ("Croce and Hein. Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse "
               "Parameter-free Attacks. ICML 2020.")


# ------------------------------------------------------------------ the table: one row per family

FgsmArt = _attack(AttackSpec(
    "fgsm", "FastGradientMethod", ("linf", "l2", "l1"),
    summary="Fast Gradient (Sign) Method: one gradient step of size eps in the chosen norm.",
    reference="Goodfellow et al. Explaining and Harnessing Adversarial Examples. ICLR 2015.",
    norm_arg="norm", fixed={"num_random_init": 0},
))

BimArt = _attack(AttackSpec(
    "bim", "BasicIterativeMethod", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25)},
    summary="Basic Iterative Method: iterated FGSM clipped to the eps-ball.",
    reference="Kurakin et al. Adversarial Examples in the Physical World. ICLR workshop 2017.",
    smoke={"steps": 3},
))

PgdArt = _attack(AttackSpec(
    "pgd", "ProjectedGradientDescent", ("linf", "l2", "l1"),
    {"steps": _steps(10), "step_size": _step_size(0.25), "random_start": _RANDOM_START},
    summary="Projected Gradient Descent (ART's PyTorch implementation).",
    reference="Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018.",
    norm_arg="norm", randomized=True, smoke={"steps": 3, "random_start": True},
))

MifgsmArt = _attack(AttackSpec(
    "mifgsm", "MomentumIterativeMethod", ("linf", "l2", "l1"),
    {"steps": _steps(10), "step_size": _step_size(0.25),
     "decay": Param("decay", 1.0, "nonneg", "momentum decay factor")},
    summary="Momentum Iterative Method (MI-FGSM).",
    reference="Dong et al. Boosting Adversarial Attacks with Momentum. CVPR 2018.",
    norm_arg="norm", smoke={"steps": 3},
))

ApgdArt = _attack(AttackSpec(
    "apgd", "AutoProjectedGradientDescent", ("linf", "l2", "l1"),
    _AUTO_PGD,
    summary="Auto-PGD: step-size-free PGD with momentum.",
    reference=_CROCE_HEIN,
    norm_arg="norm", randomized=True, smoke={"steps": 3},
))

AcgArt = _attack(AttackSpec(
    "acg", "AutoConjugateGradient", ("linf", "l2", "l1"),
    _AUTO_PGD,
    summary="Auto Conjugate Gradient: Auto-PGD with conjugate-gradient directions.",
    reference="Yamamura et al. Diversified Adversarial Attacks based on Conjugate Gradient Method. ICML 2022.",
    norm_arg="norm", randomized=True, smoke={"steps": 3},
))

ReacgArt = _attack(AttackSpec(
    "reacg", "RescalingAutoConjugateGradient", ("linf", "l2", "l1"),
    _AUTO_PGD,
    summary="Rescaling Auto Conjugate Gradient (ReACG).",
    reference="Yamamura et al. Rescaling-ACG. 2024.",
    norm_arg="norm", randomized=True, smoke={"steps": 3},
))

AutoattackArt = _attack(AttackSpec(
    "autoattack", "AutoAttack", ("linf", "l2", "l1"),
    {"steps": _steps(100, lib=None, doc="iterations of each APGD run"),
     "restarts": Param(None, 5, "int", "random restarts of each APGD run"),
     "queries": count_param(5000, None, "Square attack iterations (one query per image each)"),
     "step_size": _step_size(0.25)},
    summary="AutoAttack (ART's ensemble: APGD-CE, APGD-DLR, DeepFool, Square), each sample's strongest result.",
    reference=_CROCE_HEIN,
    targeted=False, randomized=True, norm_arg="norm",
    options=ArtOptions(ensemble=True, placeholder_module="multiprocess"),
    smoke={"steps": 3, "restarts": 1, "queries": 20},
))

CwArt = _attack(AttackSpec(
    "cw", "CarliniL2Method", ("l2",),
    {"confidence": _CONFIDENCE, "step_size": Param("learning_rate", 0.01, "pos", "learning rate"),
     "binary_search_steps": Param("binary_search_steps", 10, "int", "binary-search steps over the constant"),
     "steps": _steps(10, doc="iterations per constant"),
     "initial_const": Param("initial_const", 0.01, "pos", "initial trade-off constant"),
     "max_halving": Param("max_halving", 5, "int", "line-search halvings of the learning rate per step"),
     "max_doubling": Param("max_doubling", 5, "int", "line-search doublings of the learning rate per step")},
    summary="Carlini-Wagner L2 attack.",
    reference="Carlini and Wagner. Towards Evaluating the Robustness of Neural Networks. S&P 2017.",
    bounded=False, eps_arg=None, smoke={"steps": 3, "binary_search_steps": 2},
))

CwLinfArt = _attack(AttackSpec(
    "cw_linf", "CarliniLInfMethod", ("linf",),
    {"confidence": _CONFIDENCE, "step_size": Param("learning_rate", 0.01, "pos", "learning rate"),
     "steps": _steps(10),
     "initial_const": Param("initial_const", 1e-5, "pos", "initial trade-off constant"),
     "largest_const": Param("largest_const", 20.0, "pos", "largest trade-off constant"),
     "decrease_factor": Param("decrease_factor", 0.9, "unit", "shrink factor of the L-inf bound")},
    summary="Carlini-Wagner L-inf attack (the tau-bounded formulation).",
    reference="Carlini and Wagner. S&P 2017.",
    bounded=False, eps_arg=None,
    smoke={"steps": 2, "initial_const": 0.005, "largest_const": 0.01, "decrease_factor": 0.1},
))

CwL0Art = _attack(AttackSpec(
    "cw_l0", "CarliniL0Method", ("l0",),
    {"confidence": _CONFIDENCE, "step_size": Param("learning_rate", 0.01, "pos", "learning rate"),
     "binary_search_steps": Param("binary_search_steps", 10, "int", "binary-search steps over the constant"),
     "steps": _steps(10, doc="iterations per constant"),
     "initial_const": Param("initial_const", 0.01, "pos", "initial trade-off constant")},
    summary="Carlini-Wagner L0 attack (shrinks the set of pixels it may change).",
    reference="Carlini and Wagner. S&P 2017.",
    bounded=False, eps_arg=None, smoke={"steps": 2, "binary_search_steps": 1},
))

DeepfoolArt = _attack(AttackSpec(
    "deepfool", "DeepFool", ("l2",),
    {"steps": _steps(50),
     "overshoot": Param("epsilon", 0.02, "nonneg", "relative overshoot past the boundary"),
     "candidates": Param("nb_grads", 10, "int", "classes considered (the most likely ones)")},
    summary="DeepFool: steps to the linearised nearest decision boundary (minimal L2).",
    reference="Moosavi-Dezfooli et al. DeepFool. CVPR 2016.",
    bounded=False, targeted=False, eps_arg=None, smoke={"steps": 3},
))

NewtonfoolArt = _attack(AttackSpec(
    "newtonfool", "NewtonFool", ("l2",),
    {"steps": _steps(50), "eta": Param("eta", 0.01, "pos", "step-size strength")},
    summary="NewtonFool: Newton steps that lower the true class's probability.",
    reference="Jang et al. Objective Metrics and Gradient Descent Algorithms for Adversarial Examples in "
              "Machine Learning. ACSAC 2017.",
    bounded=False, targeted=False, eps_arg=None, smoke={"steps": 3},
))

EadArt = _attack(AttackSpec(
    "ead", "ElasticNet", ("l1",),
    {"confidence": _CONFIDENCE, "step_size": _LEARNING_RATE,
     "binary_search_steps": Param("binary_search_steps", 9, "int", "binary-search steps over the constant"),
     "steps": _steps(100, doc="iterations per constant"),
     "beta": Param("beta", 0.001, "nonneg", "L1 weight of the elastic-net penalty"),
     "initial_const": Param("initial_const", 0.001, "pos", "initial trade-off constant"),
     "decision_rule": Param("decision_rule", "en", ("en", "l1", "l2"), "which adversarial example to keep",
                            values={"en": "EN", "l1": "L1", "l2": "L2"})},
    summary="Elastic-net attack (EAD): CW with an L1 penalty, by ISTA.",
    reference="Chen et al. EAD: Elastic-Net Attacks to Deep Neural Networks. AAAI 2018.",
    bounded=False, eps_arg=None, smoke={"steps": 3, "binary_search_steps": 1},
))

JsmaArt = _attack(AttackSpec(
    "jsma", "SaliencyMapMethod", ("l0",),
    {"theta": Param("theta", 0.1, "real", "change applied to each selected feature"),
     "gamma": Param("gamma", 1.0, "unit", "largest share of features changed")},
    summary="Jacobian-based Saliency Map Attack (untargeted: towards the next class).",
    reference="Papernot et al. The Limitations of Deep Learning in Adversarial Settings. EuroS&P 2016.",
    bounded=False, eps_arg=None, options=ArtOptions(untargeted_next=True), smoke={"gamma": 0.05},
))

SquareArt = _attack(AttackSpec(
    "square", "SquareAttack", ("linf", "l2"),
    {"queries": count_param(1000, "max_iter", "iterations (one query per image each)"),
     "restarts": Param("nb_restarts", 1, "int", "restarts"),
     "p_init": Param("p_init", 0.8, "unit", "initial share of pixels changed per square")},
    summary="Square attack: score-based random search with square-shaped updates.",
    reference="Andriushchenko et al. Square Attack. ECCV 2020.",
    targeted=False, access="score", randomized=True, norm_arg="norm", smoke={"queries": 20},
))

HopSkipJumpArt = _attack(AttackSpec(
    "hop_skip_jump", "HopSkipJump", ("l2", "linf"),
    {"steps": _steps(50),
     "queries": count_param(10000, "max_eval", "largest number of queries per gradient estimate"),
     "init_eval": Param("init_eval", 100, "int", "queries of the first gradient estimate"),
     "init_size": Param("init_size", 100, "int", "random draws to find a starting point")},
    summary="HopSkipJump: decision-based boundary walk with gradient-direction estimates.",
    reference="Chen et al. HopSkipJumpAttack: a Query-Efficient Decision-Based Attack. S&P 2020.",
    bounded=False, access="decision", randomized=True, eps_arg=None, norm_arg="norm",
    options=ArtOptions(seed_random_state=True),
    smoke={"steps": 2, "queries": 20, "init_eval": 5, "init_size": 10},
))

BoundaryArt = _attack(AttackSpec(
    "boundary", "BoundaryAttack", ("l2",),
    {"steps": _steps(5000),
     "delta": Param("delta", 0.01, "pos", "initial orthogonal step"),
     "step_size": Param("epsilon", 0.01, "pos", "initial step towards the original"),
     "num_trial": Param("num_trial", 25, "int", "trials per step"),
     "sample_size": Param("sample_size", 20, "int", "samples per trial"),
     "init_size": Param("init_size", 100, "int", "random draws to find a starting point")},
    summary="Boundary attack: decision-based random walk along the decision boundary.",
    reference="Brendel et al. Decision-Based Adversarial Attacks. ICLR 2018.",
    bounded=False, access="decision", randomized=True, eps_arg=None,
    options=ArtOptions(seed_random_state=True),
    smoke={"steps": 3, "num_trial": 3, "sample_size": 3, "init_size": 10},
))

SimbaArt = _attack(AttackSpec(
    "simba", "SimBA", ("l2",),
    _SIMBA,
    summary="SimBA: score-based random search over pixel coordinates.",
    reference="Guo et al. Simple Black-box Adversarial Attacks. ICML 2019.",
    bounded=False, access="score", randomized=True, eps_arg=None,
    fixed={"attack": "px", "batch_size": 1}, options=ArtOptions(probabilities=True, per_sample=True),
    smoke={"queries": 20},
))

SimbaDctArt = _attack(AttackSpec(
    "simba_dct", "SimBA", ("l2",),
    {**_SIMBA, "freq_dim": Param("freq_dim", 4, "int", "low-frequency band searched first"),
     "stride": Param("stride", 1, "int", "stride of the frequency band")},
    summary="SimBA-DCT: SimBA over low-frequency DCT directions.",
    reference="Guo et al. Simple Black-box Adversarial Attacks. ICML 2019.",
    bounded=False, access="score", randomized=True, eps_arg=None,
    fixed={"attack": "dct", "batch_size": 1}, options=ArtOptions(probabilities=True, per_sample=True),
    smoke={"queries": 20},
))

ZooArt = _attack(AttackSpec(
    "zoo", "ZooAttack", ("l2",),
    {"confidence": _CONFIDENCE, "step_size": _LEARNING_RATE,
     "steps": _steps(10),
     "binary_search_steps": Param("binary_search_steps", 1, "int", "binary-search steps over the constant"),
     "initial_const": Param("initial_const", 0.001, "pos", "initial trade-off constant"),
     "abort_early": Param("abort_early", True, "bool", "stop when the loss stalls"),
     "use_resize": Param("use_resize", False, "bool", "attack a smaller image first (large images)"),
     "use_importance": Param("use_importance", True, "bool", "sample coordinates by importance"),
     "queries": count_param(128, "nb_parallel", "coordinates estimated per iteration (two queries each)"),
     "variable_h": Param("variable_h", 1e-4, "pos", "finite-difference step")},
    summary="ZOO: Carlini-Wagner with zeroth-order (finite-difference) coordinate gradients.",
    reference="Chen et al. ZOO: Zeroth Order Optimization Based Black-box Attacks. AISec 2017.",
    bounded=False, access="score", randomized=True, eps_arg=None, fixed={"batch_size": 1},
    smoke={"steps": 2, "queries": 8},
))

PixelArt = _attack(AttackSpec(
    "pixel", "PixelAttack", ("l0",),
    {"pixels": Param("th", 1, "int", "pixels changed"),
     "steps": _steps(100, doc="differential-evolution iterations")},
    summary="Pixel attack: a few pixels changed by differential evolution.",
    reference="Su et al. One Pixel Attack for Fooling Deep Neural Networks. IEEE TEC 2019.",
    bounded=False, access="score", randomized=True, eps_arg=None, fixed={"es": 1},
    smoke={"steps": 2},
))

ThresholdArt = _attack(AttackSpec(
    "threshold", "ThresholdAttack", ("linf",),
    {"steps": _steps(100, doc="differential-evolution iterations")},
    summary="Threshold attack: every pixel may move by eps (an integer step of 1/255), by differential evolution.",
    reference="Vargas and Su. Robustness Assessment for Adversarial Machine Learning. 2019.",
    access="score", randomized=True, eps_arg="th", fixed={"es": 1}, options=ArtOptions(eps_255=True),
    smoke={"steps": 2},
))

UniversalPerturbationArt = _attack(AttackSpec(
    "universal_perturbation", "UniversalPerturbation", ("linf", "l2"),
    {"attacker": Param("attacker", "deepfool",
                       ("deepfool", "fgsm", "bim", "pgd", "margin", "cw", "ead", "jsma", "newtonfool", "vat"),
                       "ART attack that finds each sample's step"),
     "delta": Param("delta", 0.2, "unit", "stop once the fooling rate exceeds 1 - delta"),
     "steps": _steps(20, doc="passes over the batch")},
    summary="Universal perturbation: one perturbation for the whole batch, grown sample by sample.",
    reference="Moosavi-Dezfooli et al. Universal Adversarial Perturbations. CVPR 2017.",
    targeted=False, randomized=True, norm_arg="norm", options=ArtOptions(quiet_attacker=True),
    smoke={"steps": 1, "attacker": "fgsm"},
))

TargetedUniversalPerturbationArt = _attack(AttackSpec(
    "targeted_universal_perturbation", "TargetedUniversalPerturbation", ("linf", "l2"),
    {"attacker": Param("attacker", "fgsm", ("fgsm", "simba"), "ART attack that finds each sample's step"),
     "delta": Param("delta", 0.2, "unit", "stop once the targeted rate exceeds 1 - delta"),
     "steps": _steps(20, doc="passes over the batch")},
    summary="Targeted universal perturbation (untargeted: towards the next class).",
    reference="Hirano and Takemoto. Simple Iterative Method for Generating Targeted Universal Adversarial "
              "Perturbations. Algorithms 2020.",
    randomized=True, norm_arg="norm", options=ArtOptions(untargeted_next=True), smoke={"steps": 1},
))

SpatialTransformationArt = _attack(AttackSpec(
    "spatial_transformation", "SpatialTransformation", ("linf",),
    {"max_translation": Param("max_translation", 10.0, "nonneg", "largest shift, in percent of the size"),
     "num_translations": Param("num_translations", 3, "int", "shifts tried per direction"),
     "max_rotation": Param("max_rotation", 30.0, "nonneg", "largest rotation in degrees"),
     "num_rotations": Param("num_rotations", 3, "int", "rotations tried per direction")},
    summary="Spatial transformation: the rotation and translation that fools the model most often.",
    reference="Engstrom et al. Exploring the Landscape of Spatial Robustness. ICML 2019.",
    bounded=False, targeted=False, access="decision", eps_arg=None,
    smoke={"num_translations": 1, "num_rotations": 1},
))

VatArt = _attack(AttackSpec(
    "vat", "VirtualAdversarialMethod", ("l2",),
    {"steps": _steps(10, doc="power iterations"),
     "finite_diff": Param("finite_diff", 1e-6, "pos", "finite-difference step")},
    summary="Virtual adversarial perturbation: the L2 direction that most changes the prediction.",
    reference="Miyato et al. Distributional Smoothing with Virtual Adversarial Training. ICLR 2016.",
    targeted=False, access="score", randomized=True, options=ArtOptions(probabilities=True),
    smoke={"steps": 1},
))

SignOptArt = _attack(AttackSpec(
    "sign_opt", "SignOPTAttack", ("l2",),
    {"queries": count_param(20000, "query_limit", "query budget per sample"),
     "steps": _steps(1000),
     "num_trial": Param("num_trial", 100, "int", "random directions tried to start"),
     "k": Param("k", 200, "int", "random directions per sign-gradient estimate"),
     "alpha": Param("alpha", 0.2, "pos", "step size"),
     "beta": Param("beta", 0.001, "pos", "finite-difference size")},
    summary="Sign-OPT: decision-based attack estimating the sign of the directional derivative.",
    reference="Cheng et al. Sign-OPT: a Query-Efficient Hard-label Adversarial Attack. ICLR 2020.",
    bounded=False, targeted=False, access="decision", randomized=True, eps_arg=None,
    smoke={"queries": 50, "steps": 2, "num_trial": 5, "k": 5},
))

ShadowArt = _attack(AttackSpec(
    "shadow", "ShadowAttack", ("linf",),
    {"sigma": Param("sigma", 0.5, "nonneg", "noise of the randomised-smoothing copies"),
     "steps": _steps(300, lib="nb_steps"),
     "step_size": Param("learning_rate", 0.1, "pos", "learning rate"),
     "lambda_tv": Param("lambda_tv", 0.3, "nonneg", "total-variation weight"),
     "lambda_c": Param("lambda_c", 1.0, "nonneg", "colour-regularity weight"),
     "lambda_s": Param("lambda_s", 0.5, "nonneg", "channel-similarity weight"),
     "copies": Param("batch_size", 400, "int", "noisy copies per step")},
    summary="Shadow attack: smooth, natural-looking perturbations that fool (certified) classifiers.",
    reference="Ghiasi et al. Breaking Certified Defenses: Semantic Adversarial Examples with Spoofed "
              "Robustness Certificates. ICLR 2020.",
    bounded=False, randomized=True, eps_arg=None, options=ArtOptions(per_sample=True),
    smoke={"steps": 2, "copies": 4},
))

WassersteinArt = _attack(AttackSpec(
    "wasserstein", "Wasserstein", ("linf",),
    {"radius": Param("eps", 0.3, "pos", "initial radius of the Wasserstein ball"),
     "step_size": Param("eps_step", 0.1, "pos", "step size"),
     "steps": _steps(400),
     "regularization": Param("regularization", 3000.0, "pos", "entropy regularisation"),
     "p": Param("p", 2, "int", "order of the Wasserstein distance"),
     "kernel_size": Param("kernel_size", 5, "int", "local transport window"),
     "radius_steps": Param("eps_iter", 10, "int", "iterations between radius increases"),
     "radius_factor": Param("eps_factor", 1.1, "pos", "radius growth factor"),
     "sinkhorn_steps": Param("conjugate_sinkhorn_max_iter", 400, "int", "Sinkhorn iterations")},
    summary="Wasserstein attack: PGD in a Wasserstein ball (moves pixel mass locally).",
    reference="Wong et al. Wasserstein Adversarial Examples via Projected Sinkhorn Iterations. ICML 2019.",
    bounded=False, eps_arg=None, fixed={"norm": "wasserstein", "ball": "wasserstein"},
    smoke={"steps": 2, "sinkhorn_steps": 5, "kernel_size": 3},
))

AdversarialPatchArt = _attack(AttackSpec(
    "adversarial_patch", "AdversarialPatchNumpy", ("l0",),
    {"steps": _steps(500),
     "step_size": Param("learning_rate", 5.0, "pos", "learning rate of the patch"),
     "rotation_max": Param("rotation_max", 22.5, "nonneg", "largest rotation of the patch in degrees"),
     "scale_min": Param("scale_min", 0.1, "unit", "smallest patch scale while training"),
     "scale_max": Param("scale_max", 1.0, "unit", "largest patch scale while training"),
     "scale": Param(None, 0.3, "unit", "patch scale when applied")},
    summary="Adversarial patch: one universal patch, trained under random transformations, pasted on each image.",
    reference="Brown et al. Adversarial Patch. 2017.",
    bounded=False, randomized=True, eps_arg=None,
    options=ArtOptions(untargeted_next=True, patch=True, fix="float_mean_value"), smoke={"steps": 2},
))

LaserBeamArt = _attack(AttackSpec(
    "laser_beam", "LaserBeamAttack", ("linf",),
    {"steps": _steps(20, lib="iterations", doc="greedy-search iterations"),
     "restarts": Param("random_initializations", 1, "int", "random restarts")},
    summary="Laser-beam attack: a coloured line of light (wavelength, angle, offset, width) that fools the model.",
    reference="Duan et al. Adversarial Laser Beam: Effective Physical-World Attack to DNNs in a Blink. CVPR 2021.",
    bounded=False, targeted=False, access="score", randomized=True, eps_arg=None,
    fixed={"max_laser_beam": (780.0, 3.14, 32.0, 12)},
    options=ArtOptions(layout="nhwc", rgb=True, index_labels=True, numpy1_aliases=True,
                   module="art.attacks.evasion.laser_attack.laser_attack"),
    smoke={"steps": 2},
))

GraphiteArt = _attack(AttackSpec(
    "graphite", "GRAPHITEWhiteboxPyTorch", ("l0",),
    {"steps": _steps(50, lib="steps", doc="EOT-PGD steps after the first round"),
     "first_steps": Param("first_steps", 500, "int", "EOT-PGD steps of the first round"),
     "step_size": Param("step_size", 0.0157, "pos", "step size"),
     "num_xforms": Param("num_xforms", 100, "int", "transformations averaged (EOT)"),
     "min_tr": Param("min_tr", 0.8, "unit", "transform-robustness to reach")},
    summary="GRAPHITE (white-box): a physical-world patch robust to transformations (untargeted: next class).",
    reference="Feng et al. GRAPHITE: Generating Automatic Physical Examples for Machine-Learning Attacks "
              "on Computer Vision Systems. EuroS&P 2022.",
    bounded=False, randomized=True, eps_arg=None,
    options=ArtOptions(untargeted_next=True, net_size=True), requires=("cv2",),
    smoke={"steps": 1, "first_steps": 2, "num_xforms": 2},
))

CompositeArt = _attack(AttackSpec(
    "composite", "CompositeAdversarialAttackPyTorch", ("linf",),
    {"steps": _steps(5, doc="rounds over the component attacks"),
     "inner_steps": Param("max_inner_iter", 10, "int", "iterations of each component attack"),
     "early_stop": Param("early_stop", True, "bool", "stop a sample as soon as it is fooled"),
     "order": Param("attack_order", "scheduled", ("scheduled", "fixed", "random"),
                    "order of the components: scheduled (learned), fixed or random")},
    summary="Composite adversarial attack: hue, saturation, rotation, brightness, contrast and an L-inf "
            "PGD component (eps) optimised together; colour images (grey ones through a channel-mean adapter).",
    reference="Hsiung et al. Towards Compositional Adversarial Robustness: Generalizing Adversarial Training "
              "to Composite Semantic Perturbations. CVPR 2023.",
    targeted=False, bounded=False, randomized=True, eps_arg="pgd_epsilon", fixed={"batch_size": 32},
    options=ArtOptions(rgb=True, eps_interval=True), requires=("kornia",),
    smoke={"steps": 1, "inner_steps": 2},
))

LowprofoolArt = _attack(AttackSpec(
    "lowprofool", "LowProFool", ("l2", "linf", "l1"),
    {"steps": _steps(100, lib="n_steps"),
     "threshold": Param("threshold", 0.5, "unit", "target probability that counts as success"),
     "lambd": Param("lambd", 1.5, "nonneg", "weight of the (importance-weighted) norm penalty"),
     "eta": Param("eta", 0.2, "pos", "learning rate"),
     "eta_decay": Param("eta_decay", 0.98, "unit", "learning-rate decay"),
     "eta_min": Param("eta_min", 1e-7, "pos", "smallest learning rate")},
    summary="LowProFool: imperceptible perturbations weighted by feature importance (uniform over pixels "
            "here), on the flattened image; untargeted: towards the next class.",
    reference="Ballet et al. Imperceptible Adversarial Attacks on Tabular Data. NeurIPS workshop 2019.",
    bounded=False, eps_arg=None, norm_arg="norm",
    options=ArtOptions(layout="flat", untargeted_next=True, uniform_importance=True),
    smoke={"steps": 3},
))

BrendelBethgeArt = _attack(AttackSpec(
    "brendel_bethge", "BrendelBethgeAttack", ("l2", "linf", "l1", "l0"),
    {"steps": _steps(1000, lib="steps"),
     "overshoot": Param("overshoot", 1.1, "pos", "overshoot of the starting point"),
     "step_size": Param("lr", 1e-3, "pos", "trust-region learning rate"),
     "lr_decay": Param("lr_decay", 0.5, "unit", "learning-rate decay"),
     "lr_num_decay": Param("lr_num_decay", 20, "int", "learning-rate decays"),
     "momentum": Param("momentum", 0.8, "unit", "momentum"),
     "binary_search_steps": Param("binary_search_steps", 10, "int", "binary-search steps to the boundary"),
     "init_size": Param("init_size", 100, "int", "random draws to find a starting point")},
    summary="Brendel-Bethge attack: minimal perturbations by a trust-region walk along the boundary.",
    reference="Brendel et al. Accurate, Reliable and Fast Robustness Evaluation. NeurIPS 2019.",
    bounded=False, randomized=True, eps_arg=None, norm_arg="norm",
    options=ArtOptions(module="art.attacks.evasion.brendel_bethge", seed_random_state=True), requires=("numba",),
    smoke={"steps": 3, "binary_search_steps": 2, "init_size": 10},
))


#: The generated classes in registration order (the order of the rows above).
ATTACKS: tuple[type[ArtAttack], ...] = (
    FgsmArt,
    BimArt,
    PgdArt,
    MifgsmArt,
    ApgdArt,
    AcgArt,
    ReacgArt,
    AutoattackArt,
    CwArt,
    CwLinfArt,
    CwL0Art,
    DeepfoolArt,
    NewtonfoolArt,
    EadArt,
    JsmaArt,
    SquareArt,
    HopSkipJumpArt,
    BoundaryArt,
    SimbaArt,
    SimbaDctArt,
    ZooArt,
    PixelArt,
    ThresholdArt,
    UniversalPerturbationArt,
    TargetedUniversalPerturbationArt,
    SpatialTransformationArt,
    VatArt,
    SignOptArt,
    ShadowArt,
    WassersteinArt,
    AdversarialPatchArt,
    LaserBeamArt,
    GraphiteArt,
    CompositeArt,
    LowprofoolArt,
    BrendelBethgeArt,
)
#: The rows, as the classes hold them (``options`` filled in with the defaults).
TABLE: tuple[AttackSpec, ...] = tuple(cls.spec for cls in ATTACKS)


def _registered(spec: AttackSpec) -> bool:
    return all(is_available(module) for module in spec.requires)


@hookimpl
def register_attacks(register):
    require(LIBRARY, "art", "the art backend")
    for attack in ATTACKS:
        if _registered(attack.spec):
            register(attack)
        else:
            logger.debug("art: %s not registered (needs %s)", attack.family, ", ".join(attack.spec.requires))


@hookimpl
def register_defenses(register):
    require(LIBRARY, "art", "the art backend")
    for defense in DEFENSES:
        register(defense)
