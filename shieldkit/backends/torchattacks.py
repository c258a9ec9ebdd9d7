"""The built-in ``torchattacks`` plugin: every torchattacks attack on image classifiers, by name.

The table at the end of this module says, for each family, which torchattacks
class(es) implement it, its capabilities and how shieldkit's uniform parameters
map to the class's constructor: one row per family, each an
:class:`~shieldkit.backends.AttackSpec` that
:func:`~shieldkit.backends.make_attack_class` turns into an
:class:`~shieldkit.Attack` subclass named after it (``PgdTorchattacks``);
:data:`ATTACKS` lists them in registration order. torchattacks itself is
imported only when an attack runs.

Each run builds a fresh torchattacks object, so a targeted call (torchattacks'
``set_mode_targeted_by_label``) leaves nothing behind for the next one. The
library assumes pixels in ``[0, 1]``; for other ``bounds`` the model is wrapped
to take ``[0, 1]`` inputs and pixel-valued parameters are rescaled. Its
RGB-only attacks (PI-FGSM, TI-FGSM) run on grey images through an exact adapter:
the image is repeated over three channels and the model sees their mean.

Not wrapped: ``MultiAttack`` and ``LGV`` (wrappers around other attacks, see
docs/backends.md), ``VANILA`` and ``GN`` (they never query the model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from shieldkit.backends import (
    AttackSpec,
    BackendAttack,
    BackendOptions,
    Param,
    count_classes,
    count_param,
    make_attack_class,
    require,
    seeded_call,
    step_size_param,
)
from shieldkit.plugins.hookspecs import hookimpl

logger = logging.getLogger("shieldkit.backends.torchattacks")

LIBRARY = "torchattacks"
NORM_NAMES = {"linf": "Linf", "l2": "L2", "l1": "L1"}


@dataclass(frozen=True, kw_only=True)
class TorchattacksOptions(BackendOptions):
    """Behaviour flags of a torchattacks row (``options=TorchattacksOptions(...)``).

    Besides :class:`~shieldkit.backends.BackendOptions`' ``rgb`` and ``untargeted_next``:

    Attributes:
        classes_arg: the library keyword that receives the model's number of classes (one forward pass
            finds it; APGD-T, FAB and AutoAttack take ``n_classes``).
        square_queries: AutoAttack only: its Square member gets this instance's ``queries`` (torchattacks
            builds it with 5000).
    """

    classes_arg: str | None = None
    square_queries: bool = False


class _UnitBox(nn.Module):
    """The model seen through ``[0, 1]`` inputs: ``model(low + scale * z)`` (torchattacks assumes ``[0, 1]``)."""

    def __init__(self, model: nn.Module, low: float, scale: float):
        super().__init__()
        self.model, self.low, self.scale = model, low, scale

    def forward(self, z: Tensor) -> Tensor:
        return self.model(self.low + self.scale * z)


class _GreyAsRGB(nn.Module):
    """A grey-image model seen through three channels: ``model(mean over channels)``.

    The attack's three-channel result maps back to a grey image by the same mean,
    which the model classifies exactly as the adapter did, and whose perturbation is
    no larger in L-inf or L2.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z.mean(dim=1, keepdim=True))


#: Dtypes torchattacks cannot compute in (its attacks make float32 tensors: steps, noise, kernels), run
#: through :class:`_Float32View`.
LOW_PRECISION = (torch.float16, torch.bfloat16)


class _Float32View(nn.Module):
    """A half-precision model seen through float32 tensors: ``model(z.to(dtype)).float()``.

    torchattacks builds float32 tensors of its own (random starts, kernels, Adam
    state, constants) and mixes them with the input, which fails on a float16 or
    bfloat16 model or overflows in float16 (CW's ``atanh``, SPSA's estimates). Through
    this view the library computes in float32 while the model computes exactly as it
    does on half-precision images: each input is rounded to the model's dtype first,
    so the library's result, rounded to that dtype by the attack contract, is an
    input the library itself evaluated. Gradients flow back through both casts.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z.to(self.dtype)).float()


class TorchattacksAttack(BackendAttack):
    """An attack run by torchattacks (the generated classes below subclass this)."""

    options_type = TorchattacksOptions

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        import torchattacks

        spec, options = self.spec, self.spec.options
        low, high = self.bounds
        scale = high - low
        net, z = model, x
        if x.dtype in LOW_PRECISION:
            net, z = _Float32View(net, x.dtype), x.float()
        if (low, high) != (0.0, 1.0):
            net, z = _UnitBox(net, low, scale), (x - low) / scale
        grey = self._grey(x)
        if grey:
            net, z = _GreyAsRGB(net), z.expand(-1, 3, -1, -1).contiguous()
        if net is not model:
            # torchattacks puts its model back in train mode afterwards if it found it so; an adapter
            # must therefore start in the wrapped model's mode (eval, under the state guard).
            net.train(model.training)

        kwargs = self.library_kwargs(scale)
        if spec.norm_arg is not None:
            kwargs[spec.norm_arg] = NORM_NAMES[self.norm]
        seed, seeding = seeded_call(self, x.device)
        if spec.seed_arg is not None:
            kwargs[spec.seed_arg] = seed
        if options.classes_arg is not None or options.untargeted_next:
            num_classes = count_classes(net, z)
            if options.classes_arg is not None:
                kwargs[options.classes_arg] = num_classes
            target = self._target(y, target, num_classes)

        attack = getattr(torchattacks, spec.class_for(self))(net, **kwargs)
        if options.square_queries:
            # AutoAttack builds its Square attack with 5000 queries; give it this instance's budget.
            for member in attack._autoattack.attacks:
                if isinstance(member, torchattacks.Square):
                    member.n_queries = self.queries
        labels = y
        if target is not None:
            attack.set_mode_targeted_by_label(quiet=True)
            labels = target
        with seeding:
            z_adv = attack(z, labels)
        if grey:
            z_adv = z_adv.mean(dim=1, keepdim=True)
        x_adv = low + scale * z_adv if (low, high) != (0.0, 1.0) else z_adv
        if x.dtype in LOW_PRECISION:  # float32 from the library: rounded to the input's dtype inside the ball
            return self.threat.cast_inside(x_adv.detach(), x)
        return x_adv.detach()  # the base class projects it onto the threat model


def _attack(spec: AttackSpec) -> type[TorchattacksAttack]:
    """The class for one row of the table, named ``<Family>Torchattacks`` (``pgd_rs``: ``PgdRsTorchattacks``)."""
    return make_attack_class(spec, TorchattacksAttack, LIBRARY, __name__)


# Parameter rows shared by many attacks (data: library keyword, default, rule, doc).
_steps = partial(count_param, lib="steps")
_step_size = partial(step_size_param, lib="alpha", pixel=True)


def _decay(default: float) -> Param:
    return Param("decay", default, "nonneg", "momentum decay factor")


_RANDOM_START_ON = Param("random_start", True, "bool", "start from a uniform draw in the eps-ball")
_RANDOM_START_OFF = Param("random_start", False, "bool", "start from a uniform draw in the eps-ball")
_RESIZE = Param("resize_rate", 0.9, "pos", "input-diversity resize rate")
_DIVERSITY = Param("diversity_prob", 0.5, "unit", "probability of applying input diversity")
#: The parameters of the variance-tuned attacks (VMI-FGSM, VNI-FGSM).
_VARIANCE_TUNED = {"steps": _steps(10), "step_size": _step_size(0.25), "decay": _decay(1.0),
                   "neighbors": Param("N", 5, "int", "neighbours sampled for the variance term"),
                   "beta": Param("beta", 1.5, "pos", "neighbourhood radius in units of eps")}
#: The parameters of the patch-wise attacks (PI-FGSM, PI-FGSM++).
_PATCH_WISE = {"steps": _steps(10, lib="num_iter_set"),
               "momentum": Param("momentum", 1.0, "nonneg", "momentum"),
               "amplification": Param("amplification", 10.0, "pos", "step amplification factor"),
               "prob": Param("prob", 0.7, "unit", "probability of the patch-wise update")}


# ------------------------------------------------------------------ the table: one row per family

FgsmTorchattacks = _attack(AttackSpec(
    "fgsm", "FGSM", ("linf",),
    summary="Fast Gradient Sign Method: one signed gradient step of size eps.",
    reference="Goodfellow et al. Explaining and Harnessing Adversarial Examples. ICLR 2015.",
))

BimTorchattacks = _attack(AttackSpec(
    "bim", "BIM", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25)},
    summary="Basic Iterative Method: iterated FGSM clipped to the eps-ball.",
    reference="Kurakin et al. Adversarial Examples in the Physical World. ICLR workshop 2017.",
    smoke={"steps": 3},
))

RfgsmTorchattacks = _attack(AttackSpec(
    "rfgsm", "RFGSM", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25)},
    summary="R+FGSM: a random signed step, then iterated signed gradient steps.",
    reference="Tramèr et al. Ensemble Adversarial Training. ICLR 2018.",
    randomized=True, smoke={"steps": 3},
))

PgdTorchattacks = _attack(AttackSpec(
    "pgd", {"linf": "PGD", "l2": "PGDL2"}, ("linf", "l2"),
    {"steps": _steps(10), "step_size": _step_size(0.25), "random_start": _RANDOM_START_ON},
    summary="Projected Gradient Descent in L-inf (PGD) or L2 (PGDL2).",
    reference="Madry et al. Towards Deep Learning Models Resistant to Adversarial Attacks. ICLR 2018.",
    randomized=True, smoke={"steps": 3},
))

EotPgdTorchattacks = _attack(AttackSpec(
    "eot_pgd", "EOTPGD", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25),
     "eot": Param("eot_iter", 2, "int", "gradients averaged per step (Expectation over Transformation)"),
     "random_start": _RANDOM_START_ON},
    summary="PGD with gradients averaged over random forward passes (EOT).",
    reference="Athalye et al. Synthesizing Robust Adversarial Examples. ICML 2018.",
    randomized=True, smoke={"steps": 3},
))

FfgsmTorchattacks = _attack(AttackSpec(
    "ffgsm", "FFGSM", ("linf",),
    {"step_size": _step_size(1.25)},
    summary="Fast FGSM: a uniform random start, then one signed step (fast adversarial training).",
    reference="Wong et al. Fast is Better than Free: Revisiting Adversarial Training. ICLR 2020.",
    randomized=True,
))

TpgdTorchattacks = _attack(AttackSpec(
    "tpgd", "TPGD", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25)},
    summary="TRADES PGD: signed steps up the KL divergence from the clean prediction.",
    reference="Zhang et al. Theoretically Principled Trade-off between Robustness and Accuracy. ICML 2019.",
    targeted=False, randomized=True, smoke={"steps": 3},
))

MifgsmTorchattacks = _attack(AttackSpec(
    "mifgsm", "MIFGSM", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25), "decay": _decay(1.0)},
    summary="Momentum Iterative FGSM.",
    reference="Dong et al. Boosting Adversarial Attacks with Momentum. CVPR 2018.",
    smoke={"steps": 3},
))

UpgdTorchattacks = _attack(AttackSpec(
    "upgd", "UPGD", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25), "random_start": _RANDOM_START_OFF,
     "loss": Param("loss", "ce", ("ce", "margin"), "objective: cross-entropy or CW margin"),
     "decay": _decay(1.0),
     "eot": Param("eot_iter", 1, "int", "gradients averaged per step")},
    summary="Ultimate PGD: PGD with a choice of loss, momentum and EOT.",
    reference="torchattacks (Kim 2020), after Madry et al. 2018.",
    smoke={"steps": 3},
))

ApgdTorchattacks = _attack(AttackSpec(
    "apgd", "APGD", ("linf", "l2"),
    {"steps": _steps(10),
     "restarts": Param("n_restarts", 1, "int", "restarts"),
     "loss": Param("loss", "ce", ("ce", "dlr"), "objective: cross-entropy or Difference of Logits Ratio"),
     "eot": Param("eot_iter", 1, "int", "gradients averaged per step"),
     "rho": Param("rho", 0.75, "unit", "step-size halving threshold")},
    summary="Auto-PGD: step-size-free PGD with momentum (AutoAttack's APGD-CE / APGD-DLR).",
    reference="Croce and Hein. Reliable Evaluation of Adversarial Robustness with an Ensemble of "
              "Diverse Parameter-free Attacks. ICML 2020.",
    targeted=False, randomized=True, norm_arg="norm", seed_arg="seed",
    fixed={"verbose": False}, smoke={"steps": 3},
))

ApgdTTorchattacks = _attack(AttackSpec(
    "apgd_t", "APGDT", ("linf", "l2"),
    {"steps": _steps(10),
     "restarts": Param("n_restarts", 1, "int", "restarts per target class"),
     "eot": Param("eot_iter", 1, "int", "gradients averaged per step"),
     "rho": Param("rho", 0.75, "unit", "step-size halving threshold")},
    summary="Targeted Auto-PGD over the runner-up classes (AutoAttack's APGD-T); untargeted overall.",
    reference="Croce and Hein. ICML 2020.",
    targeted=False, randomized=True, norm_arg="norm", seed_arg="seed",
    fixed={"verbose": False}, options=TorchattacksOptions(classes_arg="n_classes"), smoke={"steps": 2},
))

DifgsmTorchattacks = _attack(AttackSpec(
    "difgsm", "DIFGSM", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25), "decay": _decay(0.0),
     "resize_rate": _RESIZE, "diversity_prob": _DIVERSITY, "random_start": _RANDOM_START_OFF},
    summary="Diverse-Input FGSM: iterated FGSM on randomly resized and padded inputs.",
    reference="Xie et al. Improving Transferability of Adversarial Examples with Input Diversity. CVPR 2019.",
    randomized=True, smoke={"steps": 3},
))

TifgsmTorchattacks = _attack(AttackSpec(
    "tifgsm", "TIFGSM", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25), "decay": _decay(0.0),
     "kernel_name": Param("kernel_name", "gaussian", ("gaussian", "linear", "uniform"), "smoothing kernel"),
     "len_kernel": Param("len_kernel", 15, "int", "kernel size"),
     "nsig": Param("nsig", 3, "pos", "Gaussian kernel radius in standard deviations"),
     "resize_rate": _RESIZE, "diversity_prob": _DIVERSITY, "random_start": _RANDOM_START_OFF},
    summary="Translation-Invariant FGSM: gradients smoothed by a kernel, with input diversity.",
    reference="Dong et al. Evading Defenses to Transferable Adversarial Examples by "
              "Translation-Invariant Attacks. CVPR 2019.",
    randomized=True, options=TorchattacksOptions(rgb=True), smoke={"steps": 2, "len_kernel": 5},
))

JitterTorchattacks = _attack(AttackSpec(
    "jitter", "Jitter", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25),
     "scale": Param("scale", 10, "pos", "softmax temperature scale"),
     "std": Param("std", 0.1, "nonneg", "noise added to the scaled softmax"),
     "random_start": _RANDOM_START_ON},
    summary="Jitter: PGD on a noisy, rescaled softmax objective.",
    reference="Schwinn et al. Exploring Misclassifications of Robust Neural Networks to Enhance "
              "Adversarial Attacks. 2021.",
    randomized=True, smoke={"steps": 3},
))

NifgsmTorchattacks = _attack(AttackSpec(
    "nifgsm", "NIFGSM", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25), "decay": _decay(1.0)},
    summary="Nesterov Iterative FGSM.",
    reference="Lin et al. Nesterov Accelerated Gradient and Scale Invariance for Adversarial Attacks. ICLR 2020.",
    smoke={"steps": 3},
))

PgdRsTorchattacks = _attack(AttackSpec(
    "pgd_rs", {"linf": "PGDRS", "l2": "PGDRSL2"}, ("linf", "l2"),
    {"steps": _steps(10), "step_size": _step_size(0.25),
     "noise_type": Param("noise_type", "gaussian", ("gaussian", "uniform"), "smoothing noise",
                         values={"gaussian": "guassian", "uniform": "uniform"}),
     "noise_sd": Param("noise_sd", 0.5, "nonneg", "smoothing noise level"),
     "eot": Param("noise_batch_size", 5, "int", "noise draws averaged per step")},
    summary="PGD against a randomised-smoothing classifier (averaged softmax over noise draws).",
    reference="Salman et al. Provably Robust Deep Learning via Adversarially Trained Smoothed "
              "Classifiers. NeurIPS 2019.",
    randomized=True, fixed={"batch_max": 2048}, smoke={"steps": 2, "eot": 2},
))

SinifgsmTorchattacks = _attack(AttackSpec(
    "sinifgsm", "SINIFGSM", ("linf",),
    {"steps": _steps(10), "step_size": _step_size(0.25), "decay": _decay(1.0),
     "scales": Param("m", 5, "int", "scaled copies averaged per step")},
    summary="Scale-Invariant Nesterov Iterative FGSM.",
    reference="Lin et al. ICLR 2020.",
    smoke={"steps": 2, "scales": 2},
))

VmifgsmTorchattacks = _attack(AttackSpec(
    "vmifgsm", "VMIFGSM", ("linf",),
    _VARIANCE_TUNED,
    summary="Variance-tuned Momentum Iterative FGSM.",
    reference="Wang and He. Enhancing the Transferability of Adversarial Attacks through Variance "
              "Tuning. CVPR 2021.",
    randomized=True, smoke={"steps": 2, "neighbors": 2},
))

VnifgsmTorchattacks = _attack(AttackSpec(
    "vnifgsm", "VNIFGSM", ("linf",),
    _VARIANCE_TUNED,
    summary="Variance-tuned Nesterov Iterative FGSM.",
    reference="Wang and He. CVPR 2021.",
    randomized=True, smoke={"steps": 2, "neighbors": 2},
))

PifgsmTorchattacks = _attack(AttackSpec(
    "pifgsm", "PIFGSM", ("linf",),
    _PATCH_WISE,
    summary="Patch-wise Iterative FGSM.",
    reference="Gao et al. Patch-wise Attack for Fooling Deep Neural Network. ECCV 2020.",
    targeted=False, eps_arg="max_epsilon", options=TorchattacksOptions(rgb=True), smoke={"steps": 3},
))

PifgsmppTorchattacks = _attack(AttackSpec(
    "pifgsmpp", "PIFGSMPP", ("linf",),
    {**_PATCH_WISE, "project_factor": Param("project_factor", 0.8, "pos", "projection factor")},
    summary="Patch-wise++ Iterative FGSM (targeted patch-wise attack).",
    reference="Gao et al. Patch-wise++ Perturbation for Adversarial Targeted Attacks. 2020.",
    eps_arg="max_epsilon", options=TorchattacksOptions(rgb=True), smoke={"steps": 3},
))

SpsaTorchattacks = _attack(AttackSpec(
    "spsa", "SPSA", ("linf",),
    {"steps": _steps(1, lib="nb_iter"),
     "step_size": Param("lr", 0.01, "pos", "Adam learning rate"),
     "delta": Param("delta", 0.01, "pos", "finite-difference perturbation size"),
     "samples": Param("nb_sample", 128, "int", "random directions per gradient estimate")},
    summary="SPSA: gradient-free optimisation with simultaneous-perturbation gradient estimates.",
    reference="Uesato et al. Adversarial Risk and the Dangers of Evaluating Against Weak Attacks. ICML 2018.",
    access="score", randomized=True, fixed={"max_batch_size": 64}, smoke={"samples": 16},
))

JsmaTorchattacks = _attack(AttackSpec(
    "jsma", "JSMA", ("l0",),
    {"theta": Param("theta", 1.0, "real", "change applied to each selected pixel"),
     "gamma": Param("gamma", 0.1, "unit", "largest share of pixels changed")},
    summary="Jacobian-based Saliency Map Attack (untargeted: towards the next class, as torchattacks does).",
    reference="Papernot et al. The Limitations of Deep Learning in Adversarial Settings. EuroS&P 2016.",
    bounded=False, eps_arg=None, options=TorchattacksOptions(untargeted_next=True), smoke={"gamma": 0.05},
))

EadTorchattacks = _attack(AttackSpec(
    "ead", {"en": "EADEN", "l1": "EADL1"}, ("l1",),
    {"confidence": Param("kappa", 0.0, "nonneg", "margin required over the runner-up class"),
     "step_size": Param("lr", 0.01, "pos", "learning rate"),
     "binary_search_steps": Param("binary_search_steps", 9, "int", "binary-search steps over the constant"),
     "steps": Param("max_iterations", 100, "int>=10", "iterations per constant (at least 10)"),
     "abort_early": Param("abort_early", True, "bool", "stop when the loss stalls"),
     "initial_const": Param("initial_const", 0.001, "pos", "initial trade-off constant"),
     "beta": Param("beta", 0.001, "nonneg", "L1 weight of the elastic-net penalty"),
     "decision_rule": Param(None, "en", ("en", "l1"), "which adversarial example to keep: elastic net (EADEN) or L1 (EADL1)")},
    summary="Elastic-net attack (EAD): CW with an L1 penalty, by ISTA.",
    reference="Chen et al. EAD: Elastic-Net Attacks to Deep Neural Networks via Adversarial Examples. AAAI 2018.",
    bounded=False, eps_arg=None, select="decision_rule",
    smoke={"steps": 10, "binary_search_steps": 2},
))

CwTorchattacks = _attack(AttackSpec(
    "cw", "CW", ("l2",),
    {"c": Param("c", 1.0, "pos", "weight of the classification loss"),
     "confidence": Param("kappa", 0.0, "nonneg", "margin required over the runner-up class"),
     "steps": _steps(50),
     "step_size": Param("lr", 0.01, "pos", "Adam learning rate")},
    summary="Carlini-Wagner L2 attack (fixed constant c, Adam in tanh space).",
    reference="Carlini and Wagner. Towards Evaluating the Robustness of Neural Networks. S&P 2017.",
    bounded=False, eps_arg=None, smoke={"steps": 5},
))

DeepfoolTorchattacks = _attack(AttackSpec(
    "deepfool", "DeepFool", ("l2",),
    {"steps": _steps(50), "overshoot": Param("overshoot", 0.02, "nonneg", "relative overshoot past the boundary")},
    summary="DeepFool: steps to the linearised nearest decision boundary (minimal L2).",
    reference="Moosavi-Dezfooli et al. DeepFool: a Simple and Accurate Method to Fool Deep Neural Networks. CVPR 2016.",
    bounded=False, targeted=False, eps_arg=None, smoke={"steps": 3},
))

SparsefoolTorchattacks = _attack(AttackSpec(
    "sparsefool", "SparseFool", ("l0",),
    {"steps": _steps(10), "lam": Param("lam", 3.0, "pos", "boundary-point scaling"),
     "overshoot": Param("overshoot", 0.02, "nonneg", "relative overshoot past the boundary")},
    summary="SparseFool: few-pixel perturbations from DeepFool's boundary approximation.",
    reference="Modas et al. SparseFool: a Few Pixels Make a Big Difference. CVPR 2019.",
    bounded=False, targeted=False, eps_arg=None, smoke={"steps": 2},
))

OnePixelTorchattacks = _attack(AttackSpec(
    "one_pixel", "OnePixel", ("l0",),
    {"pixels": Param("pixels", 1, "int", "pixels changed"),
     "steps": _steps(10),
     "popsize": Param("popsize", 10, "int", "differential-evolution population multiplier")},
    summary="One-Pixel attack by differential evolution.",
    reference="Su et al. One Pixel Attack for Fooling Deep Neural Networks. IEEE TEC 2019.",
    bounded=False, access="score", randomized=True, eps_arg=None, fixed={"inf_batch": 128},
    smoke={"steps": 2, "popsize": 2},
))

PixleTorchattacks = _attack(AttackSpec(
    "pixle", "Pixle", ("l0",),
    {"x_dimensions": Param("x_dimensions", (2, 10), "any", "patch width range (pixels or share of the width)"),
     "y_dimensions": Param("y_dimensions", (2, 10), "any", "patch height range"),
     "pixel_mapping": Param("pixel_mapping", "random",
                            ("random", "similarity", "similarity_random", "distance", "distance_random"),
                            "how source pixels map to destinations"),
     "restarts": Param("restarts", 20, "int", "restarts"),
     "steps": _steps(10, lib="max_iterations"),
     "update_each_iteration": Param("update_each_iteration", False, "bool", "iterative rather than restart mode")},
    summary="Pixle: black-box rearrangement of image patches by random search.",
    reference="Pomponi et al. Pixle: a Fast and Effective Black-box Attack Based on Rearranging Pixels. IJCNN 2022.",
    bounded=False, access="score", randomized=True, eps_arg=None, smoke={"restarts": 2, "steps": 2},
))

FabTorchattacks = _attack(AttackSpec(
    "fab", "FAB", ("linf", "l2"),
    {"steps": _steps(10),
     "restarts": Param("n_restarts", 1, "int", "restarts"),
     "alpha_max": Param("alpha_max", 0.1, "unit", "largest extrapolation step"),
     "eta": Param("eta", 1.05, "pos", "overshoot of the projection"),
     "beta": Param("beta", 0.9, "unit", "trade-off towards the original point"),
     "multi_targeted": Param("multi_targeted", False, "bool", "run the targeted version over the runner-up classes")},
    summary="Fast Adaptive Boundary attack: minimal perturbations, kept when within eps.",
    reference="Croce and Hein. Minimally Distorted Adversarial Examples with a Fast Adaptive Boundary Attack. ICML 2020.",
    targeted=False, randomized=True, norm_arg="norm", seed_arg="seed",
    fixed={"verbose": False}, options=TorchattacksOptions(classes_arg="n_classes"), smoke={"steps": 3},
))

AutoattackTorchattacks = _attack(AttackSpec(
    "autoattack", "AutoAttack", ("linf", "l2"),
    {"version": Param("version", "standard", ("standard", "plus", "rand"), "attack ensemble"),
     "queries": Param(None, 5000, "int", "query budget of the Square attack in the ensemble")},
    summary="AutoAttack: APGD-CE, APGD-T, FAB-T and Square; a sample counts as robust only if all fail.",
    reference="Croce and Hein. ICML 2020.",
    targeted=False, randomized=True, norm_arg="norm", seed_arg="seed",
    fixed={"verbose": False}, options=TorchattacksOptions(classes_arg="n_classes", square_queries=True),
    smoke={"eps": 2.0, "queries": 20},
))

SquareTorchattacks = _attack(AttackSpec(
    "square", "Square", ("linf", "l2"),
    {"queries": Param("n_queries", 5000, "int", "query budget per sample"),
     "restarts": Param("n_restarts", 1, "int", "restarts"),
     "p_init": Param("p_init", 0.8, "unit", "initial share of pixels changed per square"),
     "loss": Param("loss", "margin", ("margin", "ce"), "objective"),
     "resc_schedule": Param("resc_schedule", True, "bool", "rescale the schedule to the query budget")},
    summary="Square attack: score-based random search with square-shaped updates.",
    reference="Andriushchenko et al. Square Attack: a Query-efficient Black-box Adversarial Attack via "
              "Random Search. ECCV 2020.",
    access="score", randomized=True, norm_arg="norm", seed_arg="seed",
    fixed={"verbose": False}, smoke={"queries": 50},
))


#: The generated classes in registration order (the order of the rows above).
ATTACKS: tuple[type[TorchattacksAttack], ...] = (
    FgsmTorchattacks,
    BimTorchattacks,
    RfgsmTorchattacks,
    PgdTorchattacks,
    EotPgdTorchattacks,
    FfgsmTorchattacks,
    TpgdTorchattacks,
    MifgsmTorchattacks,
    UpgdTorchattacks,
    ApgdTorchattacks,
    ApgdTTorchattacks,
    DifgsmTorchattacks,
    TifgsmTorchattacks,
    JitterTorchattacks,
    NifgsmTorchattacks,
    PgdRsTorchattacks,
    SinifgsmTorchattacks,
    VmifgsmTorchattacks,
    VnifgsmTorchattacks,
    PifgsmTorchattacks,
    PifgsmppTorchattacks,
    SpsaTorchattacks,
    JsmaTorchattacks,
    EadTorchattacks,
    CwTorchattacks,
    DeepfoolTorchattacks,
    SparsefoolTorchattacks,
    OnePixelTorchattacks,
    PixleTorchattacks,
    FabTorchattacks,
    AutoattackTorchattacks,
    SquareTorchattacks,
)
#: The rows, as the classes hold them (``options`` filled in with the defaults).
TABLE: tuple[AttackSpec, ...] = tuple(cls.spec for cls in ATTACKS)


@hookimpl
def register_attacks(register):
    require(LIBRARY, "torchattacks", "the torchattacks backend")
    for attack in ATTACKS:
        register(attack)
