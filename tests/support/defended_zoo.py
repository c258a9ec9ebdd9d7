"""A zoo of defended MNIST models written in plain PyTorch, the defence hidden inside ``forward()``.

Each entry of :data:`ZOO` takes a trained base classifier (an ``nn.Module`` mapping
``[B, 1, 28, 28]`` images in ``[0, 1]`` to logits) and returns the model a user
would hand shieldkit: nothing about the defence is declared anywhere, so whatever
shieldkit does with it (diagnosis, remedies, evaluation) has to find it from outside.
The docstrings say what each hides and which diagnosis checks it should raise
(``tests/component/test_diagnosis.py`` holds that table, with the reasons). :func:`pgd_trained_cnn` trains (once, cached on disk) a small
Madry-style PGD-trained CNN: a genuinely robust model that should raise nothing.

Randomised defences draw from torch's global RNG (so seeding torch reproduces a draw)
and randomise with functional calls (``F.dropout(..., training=True)``, ``torch.randint``),
so they stay random in eval mode, which is the mode attacks and the diagnosis run the model in.

Three models are the base as deployed rather than defended (:class:`Int8Dynamic`,
:class:`BFloat16Deployment`, :class:`InferenceModeForward`): they keep the float ``base``
as a submodule, and the attack that knows them differentiates it.

This is a helper module for the tests (``from support import defended_zoo``), not a test file.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class Defended(nn.Module):
    """A base classifier with something in front of or behind it; ``base`` stays a submodule."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base


class Undefended(Defended):
    """No defence at all: the base classifier as is. Expected flags: none."""

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x)


class Quantize(Defended):
    """Input rounding to ``levels`` grey levels (bit-depth reduction, Xu et al. 2018).

    ``torch.round`` has a zero derivative everywhere, so the input gradient exists but is
    exactly zero. Expected flags: ``zero_gradients``.
    """

    def __init__(self, base: nn.Module, levels: int = 4):
        super().__init__(base)
        self.levels = levels

    def forward(self, x: Tensor) -> Tensor:
        steps = self.levels - 1
        return self.base(torch.round(x * steps) / steps)


class Binarize(Defended):
    """Input binarisation at 0.5 by a comparison (the classic MNIST "defence").

    A comparison has no derivative at all: the output carries no autograd graph back to
    the input. Expected flags: ``missing_gradients``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return self.base((x > 0.5).to(x.dtype))


class Thermometer(Defended):
    """Thermometer encoding (Buckman et al. 2018) with ``levels`` thresholds, decoded to one channel.

    Each pixel becomes ``levels`` bits ``[x > k/levels]`` computed with ``torch.heaviside``;
    their mean is a quantised image the base classifier reads. The output does require
    grad, but backward raises (heaviside has no derivative). Expected flags: ``missing_gradients``.
    """

    def __init__(self, base: nn.Module, levels: int = 8):
        super().__init__(base)
        self.levels = levels

    def forward(self, x: Tensor) -> Tensor:
        thresholds = torch.arange(self.levels, device=x.device, dtype=x.dtype) / self.levels
        bits = torch.heaviside(x.unsqueeze(-1) - thresholds, torch.zeros((), device=x.device, dtype=x.dtype))
        return self.base(bits.mean(-1))


class RandomResizePad(Defended):
    """Random resizing and padding (Xie et al. 2018): resize to a random size in
    ``[28, 34]``, pad at a random offset to 34, resize back to 28 for the base.

    Every forward draws a new size and offset. Expected flags: ``random_forward``.
    """

    def forward(self, x: Tensor) -> Tensor:
        size = int(torch.randint(28, 35, ()).item())
        resized = F.interpolate(x, size=(size, size), mode="nearest")
        room = 34 - size
        left, top = (int(v) for v in torch.randint(0, room + 1, (2,)))
        padded = F.pad(resized, (left, room - left, top, room - top))
        return self.base(F.interpolate(padded, size=(28, 28), mode="bilinear", align_corners=False))


class ScaledLogits(Defended):
    """Logits multiplied by ``scale`` (1e4): same predictions, but softmax saturates.

    The top class gets probability exactly 1.0 and the cross-entropy gradient underflows
    to exactly zero on every correctly classified sample. Expected flags:
    ``saturated_logits``, ``zero_gradients``.
    """

    def __init__(self, base: nn.Module, scale: float = 1e4):
        super().__init__(base)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) * self.scale


class SoftmaxOutput(Defended):
    """The model ends in softmax: it returns probabilities instead of logits.

    Cross-entropy on probabilities is nearly flat, so loss-based attacks crawl.
    Expected flags: ``probability_outputs``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.base(x), dim=1)


class GaussianNoise(Defended):
    """Test-time Gaussian noise of standard deviation ``sigma`` on the input (then clipped).

    Expected flags: ``random_forward``.
    """

    def __init__(self, base: nn.Module, sigma: float = 0.1):
        super().__init__(base)
        self.sigma = sigma

    def forward(self, x: Tensor) -> Tensor:
        return self.base((x + self.sigma * torch.randn_like(x)).clamp(0, 1))


class ActiveDropout(Defended):
    """Dropout left active at test time (Monte-Carlo dropout), here on the input pixels.

    ``F.dropout(..., training=True)`` stays random in eval mode; the kept pixels are not
    rescaled, so the image keeps its brightness. Expected flags: ``random_forward``.
    """

    def __init__(self, base: nn.Module, p: float = 0.2):
        super().__init__(base)
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return self.base(F.dropout(x, self.p, training=True) * (1 - self.p))


class NumpyRoundTrip(Defended):
    """A non-differentiable NumPy preprocessing step (a 3x3 median filter computed in NumPy).

    ``x.detach().cpu().numpy()`` cuts the graph: the output does not require grad.
    Expected flags: ``missing_gradients``.
    """

    def forward(self, x: Tensor) -> Tensor:
        images = x.detach().cpu().numpy()
        padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        h, w = images.shape[-2:]
        windows = [padded[..., i:i + h, j:j + w] for i in range(3) for j in range(3)]
        filtered = np.median(np.stack(windows), axis=0).astype(images.dtype)
        return self.base(torch.from_numpy(filtered).to(x.device))


class InputSeededNoise(Defended):
    """Gaussian noise (``sigma``) seeded from a hash of each image's bytes.

    Deterministic per input, so repeated forwards agree, but the slightest change of the
    input draws entirely different noise: the output jumps under perturbations however
    small. Expected flags: ``input_seeded_randomness``.
    """

    def __init__(self, base: nn.Module, sigma: float = 0.25):
        super().__init__(base)
        self.sigma = sigma

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.empty_like(x)
        for i, image in enumerate(x.detach().cpu().numpy()):
            seed = int.from_bytes(hashlib.sha256(image.tobytes()).digest()[:8], "little")
            generator = torch.Generator().manual_seed(seed)
            noise[i] = torch.randn(image.shape, generator=generator).to(x.device, x.dtype)
        return self.base((x + self.sigma * noise).clamp(0, 1))


class ShatteredGradients(Defended):
    """A high-frequency input transform ``x + amplitude * sin(frequency * x)``.

    It moves a pixel by at most ``amplitude`` (0.02: predictions barely change) but its
    derivative oscillates between ``1 - a*f`` and ``1 + a*f`` (-19 and 21) on a period of
    ``2*pi/f`` (0.006): the gradient is exact and finite, and useless at any step an
    attack takes. Expected flags: ``shattered_gradients``.
    """

    def __init__(self, base: nn.Module, amplitude: float = 0.02, frequency: float = 1000.0):
        super().__init__(base)
        self.amplitude = amplitude
        self.frequency = frequency

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x + self.amplitude * torch.sin(self.frequency * x))


class NaNLogits(Defended):
    """A buggy model: the log of its raw logits (NaN wherever a logit is negative).

    Expected flags: ``nonfinite_outputs``, ``nonfinite_gradients``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.log(self.base(x))


class NoisyRounding(Defended):
    """Randomness and a gradient cut together: uniform noise of ``noise`` (1/6, half a
    quantisation step) on the input, then rounding to ``levels`` grey levels (as :class:`Quantize`).

    Every forward draws new noise (randomised rounding of the grey pixels), and
    ``torch.round``'s derivative is exactly zero, so the input gradient is zero
    whatever the draw. Expected flags: ``random_forward``, ``zero_gradients``.
    """

    def __init__(self, base: nn.Module, levels: int = 4, noise: float = 1 / 6):
        super().__init__(base)
        self.levels = levels
        self.noise = noise

    def forward(self, x: Tensor) -> Tensor:
        steps = self.levels - 1
        noisy = (x + torch.empty_like(x).uniform_(-self.noise, self.noise)).clamp(0, 1)
        return self.base(torch.round(noisy * steps) / steps)


def _blob_pool(size: int = 64, seed: int = 0, peak: float = 0.6) -> Tensor:
    """``size`` synthetic grey images ``[size, 1, 28, 28]``: 2 to 4 small Gaussian blobs each (widths 1
    to 2 pixels), brightest pixel ``peak``, drawn from a fixed generator (the same pool on every call)."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.arange(28, dtype=torch.float32)
    images = torch.zeros(size, 28, 28)
    for i in range(size):
        for _ in range(int(torch.randint(2, 5, (), generator=generator))):
            cy, cx = (4 + 20 * torch.rand(2, generator=generator)).tolist()
            sigma = 1 + float(torch.rand((), generator=generator))
            images[i] += torch.exp(-((grid[:, None] - cy) ** 2 + (grid[None, :] - cx) ** 2) / (2 * sigma**2))
    return (peak * images / images.amax((1, 2), keepdim=True)).unsqueeze(1)


class MixupInference(Defended):
    """Mixup Inference (Pang et al. 2020, broken by Tramer et al. 2020 with EOT): each forward
    mixes the input ``lam`` (0.6) : 0.4 with ``mixups`` (4) images drawn at random from a fixed
    pool held by the module, and returns the mean of the base's logits on the mixtures.

    The pool (a buffer) is 64 synthetic blob images from a fixed generator (the constructor
    gets only the base); which of them each sample gets comes from torch's global RNG.
    The forward is differentiable, only random. Expected flags: ``random_forward``.
    """

    def __init__(self, base: nn.Module, lam: float = 0.6, mixups: int = 4):
        super().__init__(base)
        self.lam = lam
        self.mixups = mixups
        self.register_buffer("pool", _blob_pool())

    def forward(self, x: Tensor) -> Tensor:
        picks = torch.randint(0, self.pool.shape[0], (self.mixups, x.shape[0]), device=self.pool.device)
        partners = self.pool[picks].to(x.dtype)  # [mixups, B, 1, 28, 28]
        mixed = self.lam * x.unsqueeze(0) + (1 - self.lam) * partners
        return self.base(mixed.flatten(0, 1)).unflatten(0, (self.mixups, x.shape[0])).mean(0)


class Int8Dynamic(Defended):
    """Deployed in int8: a copy of the base with its ``nn.Linear`` layers dynamically quantised
    (``torch.ao.quantization.quantize_dynamic``, qint8 weights), held as ``quantized``.

    The quantised kernels have no autograd: the output requires grad but backward reaches
    no input (``torch.autograd.grad`` finds the input unused, with a "no autograd kernel"
    warning). ``base`` stays the float model, a float twin of the quantised copy is one
    conversion away. Expected flags: ``missing_gradients``, ``deployed_precision``.
    Quantised kernels run on the CPU only.
    """

    def __init__(self, base: nn.Module):
        super().__init__(base)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
            self.quantized = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8).eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.quantized(x)


class BFloat16Deployment(Defended):
    """Deployed in bfloat16: a copy of the base cast to ``torch.bfloat16`` (held as ``deployed``)
    reads the input cast to bfloat16 and returns float32 logits.

    Autograd flows through the casts, so the gradient is the bf16 network's (8-bit
    mantissas: coarse but useful); the input is rounded to bf16 (steps up to 2**-9 near
    1). ``base`` stays the float model. Expected flags: ``deployed_precision`` (bfloat16
    parameters), no gradient flag.
    """

    def __init__(self, base: nn.Module):
        super().__init__(base)
        self.deployed = copy.deepcopy(base).to(torch.bfloat16)

    def forward(self, x: Tensor) -> Tensor:
        return self.deployed(x.to(torch.bfloat16)).float()


class InferenceModeForward(Defended):
    """A deployment wrapper whose ``forward`` runs under ``@torch.inference_mode()`` (for speed).

    The output is an inference tensor with no autograd graph: it does not require grad
    however the input does. Expected flags: ``missing_gradients``, ``deployed_precision``
    (the decorated forward).
    """

    @torch.inference_mode()
    def forward(self, x: Tensor) -> Tensor:
        return self.base(x)


class _LyingRound(torch.autograd.Function):
    """Forward: rounding to 256 grey levels (a uint8 round trip). Backward: the incoming gradient
    times a fresh random sign per pixel (torch's global RNG), instead of the true zero."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.round(x * 255) / 255

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad * (torch.randint(0, 2, grad.shape, device=grad.device) * 2 - 1).to(grad.dtype)


class LyingBackward(Defended):
    """A custom ``torch.autograd.Function`` (as defence authors write them) whose backward lies:
    the forward rounds the input to 256 grey levels (an identity for the eye), the backward
    returns the gradient with a fresh random sign on every pixel.

    The forward is deterministic and the gradient finite and non-zero, but it carries no
    information: a step along it changes the loss nothing like it predicts.
    Expected flags: ``shattered_gradients``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return self.base(_LyingRound.apply(x))


ZOO: dict[str, Callable[[nn.Module], nn.Module]] = {
    "undefended": Undefended,
    "quantize": Quantize,
    "binarize": Binarize,
    "thermometer": Thermometer,
    "random_resize_pad": RandomResizePad,
    "scaled_logits": ScaledLogits,
    "softmax_output": SoftmaxOutput,
    "gaussian_noise": GaussianNoise,
    "active_dropout": ActiveDropout,
    "numpy_round_trip": NumpyRoundTrip,
    "input_seeded_noise": InputSeededNoise,
    "shattered_gradients": ShatteredGradients,
    "nan_logits": NaNLogits,
    "noisy_rounding": NoisyRounding,
    "mixup_inference": MixupInference,
    "int8_dynamic": Int8Dynamic,
    "bfloat16_deployment": BFloat16Deployment,
    "inference_mode_forward": InferenceModeForward,
    "lying_backward": LyingBackward,
}


# ------------------------------------------------------------- a robust model


def small_cnn(width: int = 16) -> nn.Module:
    """A narrow CNN for [B, 1, 28, 28] images in [0, 1]: conv5(w)-pool-conv5(2w)-pool-fc(64)-fc(10)."""
    return nn.Sequential(
        nn.Conv2d(1, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def _pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int) -> Tensor:
    """L-inf PGD with a random start (Madry et al. 2018), cross-entropy, step 2.5*eps/steps."""
    step = 2.5 * eps / steps
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = x_adv.detach() + step * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def pgd_trained_cnn(cache_dir: str | Path, *, eps: float = 0.3, n_train: int = 10000, epochs: int = 4,
                    steps: int = 5, width: int = 16, seed: int = 0) -> nn.Module:
    """A small PGD-adversarially-trained MNIST CNN (Madry et al. 2018), trained once and cached.

    Trained on ``n_train`` real MNIST training images (``$SHIELDKIT_DATA``): one clean epoch,
    then ``epochs - 1`` epochs on PGD-``steps`` adversarial examples at ``eps``, the training
    epsilon ramping up linearly over the first of them (from scratch at 0.3 a narrow CNN
    stalls at chance). Saved as a
    state dict under ``cache_dir`` keyed by every argument; later calls load it.
    Returns the model on the CPU in eval mode. Expected diagnosis flags: none.
    """
    from shieldkit.data import load

    path = Path(cache_dir) / f"pgd_cnn_v2_eps{eps}_n{n_train}_e{epochs}_s{steps}_w{width}_seed{seed}.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = small_cnn(width)
        if path.is_file():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        data = load("mnist", split="train").subset(n_train, seed=seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batch_size = 100
        batches_per_epoch = (n_train + batch_size - 1) // batch_size
        for epoch in range(epochs):
            order = torch.randperm(n_train)
            for b in range(batches_per_epoch):
                index = order[b * batch_size:(b + 1) * batch_size]
                x, y = data.x[index], data.y[index]
                if epoch > 0:  # epoch 0 is clean: PGD at 0.3 on a random network stalls at chance
                    ramp = min(1.0, ((epoch - 1) * batches_per_epoch + b + 1) / batches_per_epoch)
                    x = _pgd(model, x, y, eps * ramp, steps)
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            logger.info("pgd_trained_cnn: epoch %d/%d, last batch loss %.3f", epoch + 1, epochs, loss.item())
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(model.state_dict(), temporary)
    temporary.replace(path)
    return model.eval()
