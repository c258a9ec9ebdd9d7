"""Generators for GAN-inversion: the Defense-GAN WGAN-GP pair, a DCGAN pair and a small VAE.

Every generator maps latents ``[N, latent_dim]`` to images ``[N, C, H, W]`` in
``[0, 1]`` (sigmoid output), draws its latents from ``N(0, I)``, and records
``latent_dim`` and ``image_shape`` so that a projection can check it against the
images it is asked to invert. None uses BatchNorm in the generator path that
matters for projection except the DCGAN, which is always projected in eval mode,
so the B x R latents of a projection never influence each other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DefenseGANGenerator",
    "Generator",
    "VAE",
    "WGANCritic",
    "dcgan_generator",
    "defense_gan_generator",
    "vae",
]


def _positive_int(owner: str, **values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {name} must be an int >= 1, got {name}={value!r}")


class Generator(nn.Module):
    """Base class: latents ``[N, latent_dim]`` to images ``[N, *image_shape]`` in ``[0, 1]``.

    Attributes:
        latent_dim: size of the latent vector.
        image_shape: ``(C, H, W)`` of the images it draws.
        arch: the architecture's name (``"vae"``, ``"wgan_gp"``, ``"dcgan"``).
        config: the constructor arguments, enough to rebuild it from a checkpoint.
    """

    arch: str = ""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)
        self.config: dict = {}

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> Tensor:
        """``n`` latents from the prior ``N(0, I)``."""
        device = device if device is not None else _device_of(self)
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images from the prior, computed in eval mode (training flags restored)."""
        was_training = self.training
        self.eval()
        try:
            return self(self.sample_latent(n, generator=generator))
        finally:
            self.train(was_training)


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def _check_image_size(owner: str, image_size: int, allowed: tuple[int, ...]) -> None:
    if image_size not in allowed:
        raise ValueError(f"{owner}: image_size must be one of {allowed}, got image_size={image_size!r}")


# ------------------------------------------------------------------ Defense-GAN


class DefenseGANGenerator(Generator):
    """The Defense-GAN / WGAN-GP MNIST generator.

    linear(latent -> 4x4x4w) - ReLU - convT5x5(4w -> 2w, x2) - ReLU - crop to 7x7 (28x28
    images only) - convT5x5(2w -> w, x2) - ReLU - convT5x5(w -> C, x2) - sigmoid; ``w=64``.

    Args:
        latent_dim: 128 in Defense-GAN.
        in_channels: image channels.
        image_size: 28 (MNIST, with the crop) or 32 (no crop).
        width: ``w`` above.

    Shape:
        ``[N, latent_dim] -> [N, in_channels, image_size, image_size]``.

    Reference:
        Samangouei, Kabkab, Chellappa. Defense-GAN. ICLR 2018.
        Gulrajani et al. Improved Training of Wasserstein GANs. NeurIPS 2017.
    """

    arch = "wgan_gp"

    def __init__(self, latent_dim: int = 128, in_channels: int = 1, image_size: int = 28, width: int = 64):
        _positive_int("defense_gan_generator", latent_dim=latent_dim, in_channels=in_channels, width=width)
        _check_image_size("defense_gan_generator", image_size, (28, 32))
        super().__init__(latent_dim, (in_channels, image_size, image_size))
        self.config = {"latent_dim": latent_dim, "in_channels": in_channels, "image_size": image_size, "width": width}
        self.width = width
        self.fc = nn.Linear(latent_dim, 4 * 4 * 4 * width)
        self.up1 = nn.ConvTranspose2d(4 * width, 2 * width, 5, stride=2, padding=2, output_padding=1)
        self.up2 = nn.ConvTranspose2d(2 * width, width, 5, stride=2, padding=2, output_padding=1)
        self.up3 = nn.ConvTranspose2d(width, in_channels, 5, stride=2, padding=2, output_padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = F.relu(self.fc(z)).view(-1, 4 * self.width, 4, 4)
        h = F.relu(self.up1(h))
        if self.image_shape[1] == 28:
            h = h[:, :, :7, :7]
        h = F.relu(self.up2(h))
        return torch.sigmoid(self.up3(h))


class WGANCritic(nn.Module):
    """The WGAN-GP critic: three 5x5 stride-2 convolutions (w, 2w, 4w) with LeakyReLU, then linear.

    No normalisation layer, as the gradient penalty requires.

    Shape:
        ``[N, C, H, W] -> [N]`` (an unbounded score).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, width: int = 64):
        super().__init__()
        _positive_int("WGANCritic", in_channels=in_channels, image_size=image_size, width=width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        side = image_size
        for _ in range(3):
            side = math.ceil(side / 2)
        self.score = nn.Linear(4 * width * side * side, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.features(x)).squeeze(1)


# ------------------------------------------------------------------------ DCGAN


class DCGANGenerator(Generator):
    """A DCGAN generator: linear to 2w x S/4 x S/4, two 4x4 stride-2 transposed convolutions.

    BatchNorm and ReLU between layers, sigmoid output. Projected in eval mode, so
    the latents of one projection batch stay independent.

    Args:
        latent_dim: 100 as in Radford et al.
        in_channels: image channels.
        image_size: a multiple of 4 (28 for MNIST).
        width: channels of the last hidden layer.

    Reference:
        Radford, Metz, Chintala. Unsupervised Representation Learning with Deep
        Convolutional Generative Adversarial Networks. ICLR 2016.
    """

    arch = "dcgan"

    def __init__(self, latent_dim: int = 100, in_channels: int = 1, image_size: int = 28, width: int = 64):
        _positive_int("dcgan_generator", latent_dim=latent_dim, in_channels=in_channels,
                      image_size=image_size, width=width)
        if image_size % 4:
            raise ValueError(f"dcgan_generator: image_size must be a multiple of 4, got image_size={image_size}")
        super().__init__(latent_dim, (in_channels, image_size, image_size))
        self.config = {"latent_dim": latent_dim, "in_channels": in_channels, "image_size": image_size, "width": width}
        self.width, self.start = width, image_size // 4
        self.fc = nn.Linear(latent_dim, 2 * width * self.start**2, bias=False)
        self.bn0 = nn.BatchNorm1d(2 * width * self.start**2)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.up2 = nn.ConvTranspose2d(width, in_channels, 4, stride=2, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = F.relu(self.bn0(self.fc(z))).view(-1, 2 * self.width, self.start, self.start)
        h = F.relu(self.bn1(self.up1(h)))
        return torch.sigmoid(self.up2(h))


class DCGANDiscriminator(nn.Module):
    """A DCGAN discriminator: two 4x4 stride-2 convolutions (BatchNorm on the second), LeakyReLU, linear logit.

    Shape:
        ``[N, C, H, W] -> [N]`` (a logit: real vs generated).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, width: int = 64):
        super().__init__()
        _positive_int("DCGANDiscriminator", in_channels=in_channels, image_size=image_size, width=width)
        side = image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(2 * width * side * side, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


# -------------------------------------------------------------------------- VAE


class VAE(Generator):
    """A fully connected variational autoencoder; called on latents it is its decoder (a fast generator).

    Encoder ``D - hidden - (mu, logvar)``, decoder ``latent - hidden - D`` with a
    sigmoid, ``D = C*H*W``. The MNIST default is 784-400-20 (Kingma and Welling).

    Args:
        image_shape: ``(C, H, W)``.
        hidden: width of the hidden layer.
        latent_dim: size of the latent vector.

    Shape:
        ``forward``: ``[N, latent_dim] -> [N, C, H, W]``; ``encode``: ``[N, C, H, W] -> ([N, latent_dim], [N, latent_dim])``.

    Reference:
        Kingma, Welling. Auto-Encoding Variational Bayes. ICLR 2014.
    """

    arch = "vae"

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28), hidden: int = 400, latent_dim: int = 20):
        if len(tuple(image_shape)) != 3:
            raise ValueError(f"vae: image_shape must be (C, H, W), got image_shape={image_shape!r}")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in image_shape):
            raise ValueError(f"vae: image_shape must hold three ints >= 1, got image_shape={image_shape!r}")
        _positive_int("vae", hidden=hidden, latent_dim=latent_dim)
        super().__init__(latent_dim, tuple(image_shape))
        self.config = {"image_shape": list(self.image_shape), "hidden": hidden, "latent_dim": latent_dim}
        features = math.prod(self.image_shape)
        self.enc = nn.Linear(features, hidden)
        self.enc_mu = nn.Linear(hidden, latent_dim)
        self.enc_logvar = nn.Linear(hidden, latent_dim)
        self.dec = nn.Linear(latent_dim, hidden)
        self.dec_out = nn.Linear(hidden, features)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of ``q(z | x)``."""
        h = F.relu(self.enc(x.flatten(1)))
        return self.enc_mu(h), self.enc_logvar(h)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.dec_out(F.relu(self.dec(z)))).view(-1, *self.image_shape)

    def loss(self, x: Tensor) -> Tensor:
        """The negative ELBO per image (Bernoulli likelihood), averaged over the batch."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.dec_out(F.relu(self.dec(z)))
        reconstruction = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="sum")
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum()
        return (reconstruction + kl) / x.shape[0]


# -------------------------------------------------------------- model factories


def defense_gan_generator(*, latent_dim: int = 128, in_channels: int = 1, image_size: int = 28,
                          width: int = 64) -> DefenseGANGenerator:
    """The Defense-GAN MNIST generator (untrained); train it with ``shieldkit train-generator --arch wgan_gp``."""
    return DefenseGANGenerator(latent_dim, in_channels, image_size, width)


def dcgan_generator(*, latent_dim: int = 100, in_channels: int = 1, image_size: int = 28,
                    width: int = 64) -> DCGANGenerator:
    """A DCGAN generator (untrained); train it with ``shieldkit train-generator --arch dcgan``."""
    return DCGANGenerator(latent_dim, in_channels, image_size, width)


def vae(*, in_channels: int = 1, image_size: int = 28, hidden: int = 400, latent_dim: int = 20) -> VAE:
    """A 784-400-20 VAE (untrained) whose decoder is a fast generator; ``shieldkit train-generator --arch vae``."""
    return VAE((in_channels, image_size, image_size), hidden, latent_dim)


#: architecture name -> (generator class, critic/discriminator class or None)
ARCHITECTURES = {
    "vae": (VAE, None),
    "wgan_gp": (DefenseGANGenerator, WGANCritic),
    "dcgan": (DCGANGenerator, DCGANDiscriminator),
}


def build_generator(arch: str, config: dict) -> Generator:
    """Rebuild a generator from its architecture name and ``config`` (as saved in checkpoints)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown generator architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    cls = ARCHITECTURES[arch][0]
    config = dict(config)
    if cls is VAE and "image_shape" in config:
        config["image_shape"] = tuple(config["image_shape"])
    return cls(**config)
