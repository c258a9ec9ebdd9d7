"""ART's defences as shieldkit defences of the right kind (used by the ``art`` plugin).

The table at the end of this module maps each ART defence to a shieldkit kind,
one :class:`DefenseSpec` row per family, each turned by :func:`make_defense_class`
into a class named after it (``JpegArt``, ``__module__`` ``shieldkit.backends.art``,
which re-exports it); :data:`DEFENSES` lists them in registration order:

- preprocessors become :class:`~shieldkit.TransformDefense`; their ``surrogate``
  (``attack_view(gradient="surrogate")``) backpropagates through ART's own
  ``estimate_gradient`` (the identity for most, the soft thermometer for
  thermometer encoding), so BPDA behaves as in ART;
- postprocessors become :class:`~shieldkit.PostprocessDefense`: the model's
  softmax goes through ART's postprocessor and comes back as logits whose softmax
  is ART's output (renormalised);
- trainers become :class:`~shieldkit.TrainerDefense`: ``fit`` trains a copy of the
  model with ART (adversarial training, Madry PGD, fast adversarial training,
  TRADES, AWP, and training-time augmentations).

Families match native ones where the algorithm is the same (``jpeg``,
``bit_depth``, ``median_smoothing``, ``gaussian_noise``, ``adversarial_training``)
and take the same parameter names and defaults.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from shieldkit.backends import (
    ComponentSpec,
    Derived,
    Param,
    build_component_class,
    class_name_for,
    component_docstring,
    count_classes,
    draw_seed,
    from_numpy,
    init_keywords,
    library_class,
    to_numpy,
)
from shieldkit.core.defense import PostprocessDefense, TrainerDefense, TransformDefense
from shieldkit.core.errors import InvalidParameterError
from shieldkit.core.seeding import seeded
from shieldkit.core.threat import DEFAULT_EPS

COMMON = ("bounds", "seed")
#: the module the generated classes are named in (it re-exports them).
MODULE = "shieldkit.backends.art"
KINDS = ("transform", "postprocess", "trainer")
TRAINERS = ("adversarial", "madry", "fbf", "trades", "awp", "augment")


@dataclass(frozen=True)
class DefenseSpec(ComponentSpec):
    """One row of the defence table: a family, its kind and the ART class behind it.

    The family, kind, ART class, module and ``params`` may be given by position;
    everything else by keyword. Besides :class:`~shieldkit.backends.ComponentSpec`'s fields:

    Attributes:
        kind: shieldkit's kind: ``transform``, ``postprocess`` or ``trainer``.
        cls: the ART class (in ``module``).
        module: the module that holds it.
        params: shieldkit name -> :class:`~shieldkit.backends.Param`.
        differentiable: the defence is differentiable (gradients flow through it unchanged).
        trainer: how a trainer is built (``adversarial``, ``madry``, ``fbf``, ``trades``, ``awp``,
            ``augment``: train with the preprocessor applied to the training data).
        smoke_fit: ``fit`` options for a quick conformance run.
    """

    kind: str
    cls: str
    module: str
    params: Mapping[str, Param] = field(default_factory=dict)
    _: KW_ONLY
    differentiable: bool = False
    trainer: str = ""
    smoke_fit: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.family}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.kind == "trainer") != (self.trainer in TRAINERS):
            raise ValueError(f"{self.family}: a trainer row names its trainer ({', '.join(TRAINERS)}), "
                             f"other rows none; got kind={self.kind!r}, trainer={self.trainer!r}")


# ------------------------------------------------------------------- helpers


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], nb_classes: int, bounds: tuple[float, float],
                   device: torch.device, **extra: Any) -> Any:
    """ART's ``PyTorchClassifier`` for ``model`` (cross-entropy loss, ``clip_values`` from ``bounds``, ``device``).

    The attacks' estimators (``art.estimator_for``) and ART's trainers both use it;
    ``extra`` goes to the constructor (``optimizer``, ``channels_first`` ...).
    """
    import numpy as np
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=nb_classes,
        clip_values=np.array(bounds, dtype=np.float32),
        device_type="gpu" if device.type == "cuda" else "cpu",
        **extra,
    )


def _art_class(spec: DefenseSpec) -> type:
    return library_class(spec.module, spec.cls)


def _art_kwargs(defense: Any, cls: type, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """ART keywords: fixed and translated parameters, and clip values / layout where the class takes them."""
    import numpy as np

    accepted = init_keywords(cls)
    kwargs = defense.spec.library_values(defense, eps=getattr(defense, "eps", None), accepted=accepted)
    if "clip_values" in accepted:
        kwargs["clip_values"] = np.array(defense.bounds, dtype=np.float32)
    if "channels_first" in accepted:
        kwargs["channels_first"] = True
    kwargs.update(extra or {})
    return kwargs


def _seed_from(defense: Any) -> int:
    """A seed for ART's NumPy randomness: from the defence's own generator when seeded, else torch's."""
    return draw_seed(None, defense.rng(torch.device("cpu")))


class _ArtEstimatedGradient(torch.autograd.Function):
    """Forward: the ART preprocessor. Backward: ART's ``estimate_gradient`` (its BPDA rule)."""

    @staticmethod
    def forward(ctx, x: Tensor, defense: ArtTransform) -> Tensor:  # type: ignore[override]
        ctx.defense = defense
        ctx.save_for_backward(x)
        return defense.transform(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        estimate = ctx.defense.art_object().estimate_gradient(to_numpy(x.float()), to_numpy(grad.float()))  # no bfloat16 in NumPy
        return from_numpy(estimate, grad), None


# ------------------------------------------------------------------- kinds


class _ArtDefenseMixin:
    spec: ClassVar[DefenseSpec]
    _art: Any = None

    def art_object(self) -> Any:
        """The ART preprocessor or postprocessor for this instance's parameters (built once)."""
        if self._art is None:
            cls = _art_class(self.spec)
            self._art = cls(**_art_kwargs(self, cls))
        return self._art


class ArtTransform(_ArtDefenseMixin, TransformDefense):
    """An ART preprocessor applied to the input."""

    def _transform(self, x: Tensor) -> Tensor:
        with seeded(_seed_from(self), every_library=True):
            out, _ = self.art_object()(to_numpy(x.float()))  # NumPy has no bfloat16
        return from_numpy(out, x)

    def surrogate(self, x: Tensor) -> Tensor:
        """ART's gradient estimate: the identity unless the preprocessor defines its own (thermometer)."""
        from art.defences.preprocessor import Preprocessor

        if type(self.art_object()).estimate_gradient is Preprocessor.estimate_gradient:
            return x
        return _ArtEstimatedGradient.apply(x, self)


class ArtPostprocess(_ArtDefenseMixin, PostprocessDefense):
    """An ART postprocessor applied to the model's probabilities; logits come back out."""

    def _postprocess(self, logits: Tensor) -> Tensor:
        probabilities = to_numpy(logits.detach().float().softmax(dim=1))
        with seeded(_seed_from(self), every_library=True):
            out = from_numpy(self.art_object()(probabilities), logits)
        # Logits whose softmax is ART's output (renormalised); a zero probability becomes a very low logit.
        return out.clamp_min(1e-12).log()


class ArtTrainer(_ArtDefenseMixin, TrainerDefense):
    """An ART trainer: ``fit`` trains a copy of the model and returns it in eval mode."""

    fit_options: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "lr", "seed", "quiet")

    def _fit(self, model: nn.Module, train_data: Any, *, epochs: int = 1, batch_size: int = 128, lr: float = 1e-3,
             seed: int = 0, quiet: bool = True) -> nn.Module:
        """Train a copy of ``model`` with Adam (learning rate ``lr``) for ``epochs`` on ``train_data``."""
        import numpy as np

        from shieldkit.defenses.training import as_training_data, check_fit_options

        owner = self.name
        check_fit_options(owner, epochs, batch_size, lr, checkpoint_dir=None, resume=False, quiet=quiet, seed=seed)
        x, y = as_training_data(owner, train_data, self.bounds)
        trained = copy.deepcopy(model)
        parameters = [p for p in trained.parameters() if p.requires_grad]
        if not parameters:
            raise InvalidParameterError(f"{owner}.fit: the model has no trainable parameters")
        device = parameters[0].device
        nb_classes = count_classes(trained.eval(), x[:1].to(device))

        def estimator(net: nn.Module, optimizer: torch.optim.Optimizer, **extra: Any) -> Any:
            return art_classifier(net, tuple(x.shape[1:]), nb_classes, self.bounds, device, optimizer=optimizer,
                                  **extra)

        x_np = to_numpy(x)
        y_np = np.eye(nb_classes, dtype=np.float32)[y.cpu().numpy()]
        dtype = parameters[0].dtype
        with seeded(seed, device, every_library=True), _quiet_progress_bars(quiet):
            net = _Whole(trained, dtype).train()
            self._trainer_fit(estimator, net, parameters, lr, x_np, y_np, epochs, batch_size)
        return trained.eval()

    def _trainer_fit(self, estimator, net, parameters, lr, x_np, y_np, epochs, batch_size) -> Any:
        from art.attacks.evasion import ProjectedGradientDescent

        kind = self.spec.trainer
        cls = _art_class(self.spec)
        classifier = estimator(net, torch.optim.Adam(parameters, lr=lr))
        if kind == "augment":
            extra = {"num_classes": classifier.nb_classes} if "num_classes" in init_keywords(cls) else {}
            augmentation = cls(**_art_kwargs(self, cls, extra))
            classifier = estimator(net, torch.optim.Adam(parameters, lr=lr), preprocessing_defences=[augmentation])
            classifier.fit(x_np, y_np, batch_size=batch_size, nb_epochs=epochs)
            return classifier
        if kind == "madry":
            # The table's parameters (max_iter, eps_step derived from eps, num_random_init) go as keywords.
            trainer = cls(classifier, nb_epochs=epochs, batch_size=batch_size, eps=self.eps, **_art_kwargs(self, cls))
            trainer.fit(x_np, y_np)
            return classifier
        if kind == "fbf":
            trainer = cls(classifier, eps=self.eps)
            trainer.fit(x_np, y_np, batch_size=batch_size, nb_epochs=epochs)
            return classifier
        attack = ProjectedGradientDescent(classifier, norm=float("inf"), eps=self.eps, eps_step=self._step(),
                                          max_iter=self.steps, num_random_init=1, batch_size=batch_size,
                                          verbose=False)
        if kind == "adversarial":
            trainer = cls(classifier, attacks=attack, ratio=self.ratio)
        elif kind == "trades":
            trainer = cls(classifier, attack=attack, beta=self.beta)
        elif kind == "awp":
            proxy = copy.deepcopy(net)
            proxy_classifier = estimator(proxy, torch.optim.SGD(proxy.parameters(), lr=0.01))
            mode = self.spec.params["mode"].translate(self.mode)
            trainer = cls(classifier, proxy_classifier, attack=attack, mode=mode, gamma=self.gamma, beta=self.beta,
                          warmup=self.warmup)
        else:  # pragma: no cover - DefenseSpec admits only the kinds above
            raise ValueError(f"unknown trainer kind {kind!r}")
        trainer.fit(x_np, y_np, batch_size=batch_size, nb_epochs=epochs)
        return classifier

    def _step(self) -> float:
        """The training attack's step size: ``step_size``, else the table's default derived from ``eps``."""
        if self.step_size is not None:
            return self.step_size
        return self.spec.params["step_size"].derived.value(self.eps, None) or 0.0


class _Whole(nn.Module):
    """The trained network as ART should see it: one module (ART splits an ``nn.Sequential`` into its layers
    and some of its trainers then read the first layer's output as logits), inputs cast to the model's dtype
    (ART's augmentations return float64 arrays)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.to(self.dtype))


def _quiet_progress_bars(quiet: bool) -> contextlib.AbstractContextManager:
    """Silence ART's (unconditional) tqdm progress bars while it trains, unless ``quiet=False``.

    The bars write to ``sys.stderr``; logging handlers keep their own stream and still work.
    """
    return contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext()


_KIND_BASES = {"transform": ArtTransform, "postprocess": ArtPostprocess, "trainer": ArtTrainer}


def make_defense_class(spec: DefenseSpec, module: str = MODULE) -> type:
    """A shieldkit defence class for one row of the table, named ``<Family>Art`` (``JpegArt``)."""
    base = _KIND_BASES[spec.kind]
    common = "``bounds``, ``seed``"
    if spec.kind == "trainer":
        common += (". ``fit(model, train_data, *, epochs=1, batch_size=128, lr=1e-3, seed=0, quiet=True)`` trains a copy "
                   "of ``model`` with Adam and returns it in eval mode")
    doc = component_docstring(spec.summary, [spec.cls], spec.module, spec.params, common, spec.reference)
    attributes = {
        "__doc__": doc,
        "differentiable": spec.differentiable,
        "smoke_fit_options": dict(spec.smoke_fit),
    }
    return build_component_class(class_name_for(spec.family, "art"), base, spec, COMMON, module, attributes)


# ------------------------------------------------------------------ the table: one row per family

_PRE = "art.defences.preprocessor"
_POST = "art.defences.postprocessor"
_TRAIN = "art.defences.trainer"
_EPS = Param(None, DEFAULT_EPS["linf"], "nonneg", "L-inf budget of the training attack")
_ATTACK_STEPS = Param(None, 7, "int", "PGD steps of the training attack")
_ATTACK_STEP = Param(None, None, "pos", "PGD step size", derived=Derived(0.25))
_SMOKE_FIT = {"epochs": 1, "batch_size": 4}

JpegArt = make_defense_class(DefenseSpec(
    "jpeg", "transform", "JpegCompression", _PRE,
    {"quality": Param("quality", 75, "int", "JPEG quality, 1 to 95")},
    summary="JPEG compression of the input (ART).",
    reference="Dziugaite et al. A Study of the Effect of JPG Compression on Adversarial Images. 2016.",
))

BitDepthArt = make_defense_class(DefenseSpec(
    "bit_depth", "transform", "FeatureSqueezing", _PRE,
    {"bits": Param("bit_depth", 4, "int", "bits kept per pixel")},
    summary="Bit-depth reduction (ART's feature squeezing).",
    reference="Xu et al. Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks. NDSS 2018.",
))

MedianSmoothingArt = make_defense_class(DefenseSpec(
    "median_smoothing", "transform", "SpatialSmoothing", _PRE,
    {"window": Param("window_size", 3, "int", "side of the median filter window")},
    summary="Median filter over a sliding window (ART's spatial smoothing).",
    reference="Xu et al. NDSS 2018.",
))

TotalVariationArt = make_defense_class(DefenseSpec(
    "total_variation", "transform", "TotalVarMin", _PRE,
    {"prob": Param("prob", 0.3, "unit", "share of pixels kept by the random mask"),
     "norm": Param("norm", 2, "int", "norm of the reconstruction error"),
     "lamb": Param("lamb", 0.5, "nonneg", "total-variation weight"),
     "steps": Param("max_iter", 10, "int", "optimiser iterations")},
    summary="Total-variation minimisation from a random subset of pixels.",
    reference="Guo et al. Countering Adversarial Images using Input Transformations. ICLR 2018.",
    randomized=True, fixed={"solver": "L-BFGS-B"}, smoke={"steps": 2},
))

GaussianNoiseArt = make_defense_class(DefenseSpec(
    "gaussian_noise", "transform", "GaussianAugmentation", _PRE,
    {"sigma": Param("sigma", 0.1, "nonneg", "standard deviation of the noise")},
    summary="Gaussian noise added to the input at inference (ART's Gaussian augmentation, no copies).",
    reference="Zantedeschi et al. Efficient Defenses Against Adversarial Attacks. AISec 2017.",
    randomized=True, fixed={"augmentation": False, "apply_fit": False, "apply_predict": True},
))

ThermometerEncodingArt = make_defense_class(DefenseSpec(
    "thermometer_encoding", "transform", "ThermometerEncoding", _PRE,
    {"num_space": Param("num_space", 10, "int", "levels; the output has C * num_space channels")},
    summary="Thermometer encoding: each pixel becomes num_space binary channels (the model must take them).",
    reference="Buckman et al. Thermometer Encoding: One Hot Way to Resist Adversarial Examples. ICLR 2018.",
    smoke={"num_space": 1},
))

ReverseSigmoidArt = make_defense_class(DefenseSpec(
    "reverse_sigmoid", "postprocess", "ReverseSigmoid", _POST,
    {"beta": Param("beta", 1.0, "pos", "perturbation magnitude"),
     "gamma": Param("gamma", 0.1, "pos", "perturbation convergence")},
    summary="Reverse sigmoid: perturbs the probabilities to poison model extraction.",
    reference="Lee et al. Defending Against Model Stealing Attacks Using Deceptive Perturbations. 2018.",
))

HighConfidenceArt = make_defense_class(DefenseSpec(
    "high_confidence", "postprocess", "HighConfidence", _POST,
    {"cutoff": Param("cutoff", 0.25, "unit", "probabilities below this are zeroed")},
    summary="Only high-confidence probabilities are released.",
    reference="Tramèr et al. Stealing Machine Learning Models via Prediction APIs. USENIX Security 2016.",
))

RoundingArt = make_defense_class(DefenseSpec(
    "rounding", "postprocess", "Rounded", _POST,
    {"decimals": Param("decimals", 3, "int", "decimals kept")},
    summary="Probabilities rounded to a few decimals.",
    reference="Tramèr et al. USENIX Security 2016.",
))

ClassLabelsArt = make_defense_class(DefenseSpec(
    "class_labels", "postprocess", "ClassLabels", _POST,
    summary="Only the predicted label is released (one-hot output).",
    reference="Tramèr et al. USENIX Security 2016.",
))

GaussianNoisePostArt = make_defense_class(DefenseSpec(
    "gaussian_noise_post", "postprocess", "GaussianNoise", _POST,
    {"scale": Param("scale", 0.2, "nonneg", "standard deviation of the noise on the probabilities")},
    summary="Gaussian noise added to the output probabilities.",
    reference="Chandrasekaran et al. Exploring Connections Between Active Learning and Model Extraction. "
              "USENIX Security 2020.",
    randomized=True,
))

AdversarialTrainingArt = make_defense_class(DefenseSpec(
    "adversarial_training", "trainer", "AdversarialTrainer", _TRAIN,
    {"eps": _EPS, "steps": _ATTACK_STEPS, "step_size": _ATTACK_STEP,
     "ratio": Param("ratio", 0.5, "unit", "share of each batch replaced by adversarial examples")},
    summary="Adversarial training (ART): a share of each batch replaced by PGD examples.",
    reference="Goodfellow et al. ICLR 2015; Madry et al. ICLR 2018.",
    trainer="adversarial", smoke={"steps": 1}, smoke_fit=_SMOKE_FIT,
))

MadryPgdArt = make_defense_class(DefenseSpec(
    "madry_pgd", "trainer", "AdversarialTrainerMadryPGD", _TRAIN,
    {"eps": _EPS, "steps": Param("max_iter", 7, "int", "PGD steps of the training attack"),
     "step_size": Param("eps_step", None, "pos", "PGD step size", derived=Derived(0.25)),
     "random_start": Param("num_random_init", True, "bool", "PGD starts from a random point",
                           values={True: 1, False: 0})},
    summary="Madry et al.'s PGD adversarial training (only adversarial examples).",
    reference="Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018.",
    trainer="madry", smoke={"steps": 1}, smoke_fit=_SMOKE_FIT,
))

FastAdversarialTrainingArt = make_defense_class(DefenseSpec(
    "fast_adversarial_training", "trainer", "AdversarialTrainerFBFPyTorch", _TRAIN,
    {"eps": _EPS},
    summary="Fast adversarial training: FGSM from a random start with a cyclic learning rate.",
    reference="Wong et al. Fast is Better than Free: Revisiting Adversarial Training. ICLR 2020.",
    trainer="fbf", smoke_fit=_SMOKE_FIT,
))

TradesArt = make_defense_class(DefenseSpec(
    "trades", "trainer", "AdversarialTrainerTRADESPyTorch", _TRAIN,
    {"eps": _EPS, "steps": _ATTACK_STEPS, "step_size": _ATTACK_STEP,
     "beta": Param("beta", 6.0, "nonneg", "weight of the robustness (KL) term")},
    summary="TRADES: cross-entropy plus beta times the KL divergence to adversarial predictions.",
    reference="Zhang et al. Theoretically Principled Trade-off between Robustness and Accuracy. ICML 2019.",
    trainer="trades", smoke={"steps": 1}, smoke_fit=_SMOKE_FIT,
))

AwpArt = make_defense_class(DefenseSpec(
    "awp", "trainer", "AdversarialTrainerAWPPyTorch", _TRAIN,
    {"eps": _EPS, "steps": _ATTACK_STEPS, "step_size": _ATTACK_STEP,
     "mode": Param("mode", "pgd", ("pgd", "trades"), "base adversarial training", values={"pgd": "PGD",
                                                                                      "trades": "TRADES"}),
     "gamma": Param("gamma", 0.01, "pos", "size of the weight perturbation relative to the weights"),
     "beta": Param("beta", 6.0, "nonneg", "TRADES weight (mode='trades')"),
     "warmup": Param("warmup", 0, "int0", "epochs before weights are perturbed")},
    summary="Adversarial Weight Perturbation on top of PGD or TRADES adversarial training.",
    reference="Wu et al. Adversarial Weight Perturbation Helps Robust Generalization. NeurIPS 2020.",
    trainer="awp", smoke={"steps": 1}, smoke_fit=_SMOKE_FIT,
))

GaussianAugmentationArt = make_defense_class(DefenseSpec(
    "gaussian_augmentation", "trainer", "GaussianAugmentation", _PRE,
    {"sigma": Param("sigma", 0.1, "nonneg", "standard deviation of the noise"),
     "ratio": Param("ratio", 1.0, "pos", "noisy copies added, as a share of the data")},
    summary="Training on the data plus Gaussian-noise copies.",
    reference="Zantedeschi et al. Efficient Defenses Against Adversarial Attacks. AISec 2017.",
    trainer="augment", randomized=True, fixed={"augmentation": True, "apply_fit": True, "apply_predict": False},
    smoke_fit=_SMOKE_FIT,
))

LabelSmoothingArt = make_defense_class(DefenseSpec(
    "label_smoothing", "trainer", "LabelSmoothing", _PRE,
    {"max_value": Param("max_value", 0.9, "unit", "probability given to the true class")},
    summary="Training on smoothed labels.",
    reference="Warde-Farley and Goodfellow. Adversarial Perturbations of Deep Neural Networks. 2016.",
    trainer="augment", fixed={"apply_fit": True, "apply_predict": False}, smoke_fit=_SMOKE_FIT,
))

MixupArt = make_defense_class(DefenseSpec(
    "mixup", "trainer", "Mixup", _PRE,
    {"alpha": Param("alpha", 1.0, "pos", "Beta distribution parameter"),
     "num_mix": Param("num_mix", 2, "int>=2", "samples mixed together")},
    summary="Training on convex combinations of images and of their labels.",
    reference="Zhang et al. mixup: Beyond Empirical Risk Minimization. ICLR 2018.",
    trainer="augment", randomized=True, fixed={"apply_fit": True, "apply_predict": False}, smoke_fit=_SMOKE_FIT,
))

CutmixArt = make_defense_class(DefenseSpec(
    "cutmix", "trainer", "CutMix", _PRE,
    {"alpha": Param("alpha", 1.0, "pos", "Beta distribution parameter"),
     "probability": Param("probability", 0.5, "unit", "probability of mixing a batch")},
    summary="Training on images with a patch cut from another image, labels mixed by area.",
    reference="Yun et al. CutMix. ICCV 2019.",
    trainer="augment", randomized=True, fixed={"apply_fit": True, "apply_predict": False}, smoke_fit=_SMOKE_FIT,
))

CutoutArt = make_defense_class(DefenseSpec(
    "cutout", "trainer", "Cutout", _PRE,
    {"length": Param("length", 8, "int", "side of the square cut out")},
    summary="Training on images with a random square cut out.",
    reference="DeVries and Taylor. Improved Regularization of Convolutional Neural Networks with Cutout. 2017.",
    trainer="augment", randomized=True, fixed={"apply_fit": True, "apply_predict": False}, smoke_fit=_SMOKE_FIT,
))


#: The generated classes in registration order (the order of the rows above).
DEFENSES: tuple[type, ...] = (
    JpegArt,
    BitDepthArt,
    MedianSmoothingArt,
    TotalVariationArt,
    GaussianNoiseArt,
    ThermometerEncodingArt,
    ReverseSigmoidArt,
    HighConfidenceArt,
    RoundingArt,
    ClassLabelsArt,
    GaussianNoisePostArt,
    AdversarialTrainingArt,
    MadryPgdArt,
    FastAdversarialTrainingArt,
    TradesArt,
    AwpArt,
    GaussianAugmentationArt,
    LabelSmoothingArt,
    MixupArt,
    CutmixArt,
    CutoutArt,
)
#: The rows, as the classes hold them.
DEFENSES_TABLE: tuple[DefenseSpec, ...] = tuple(cls.spec for cls in DEFENSES)
