"""JPEG compression in torch: 8x8 DCT, the standard quantisation tables scaled by quality, rounding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from shieldkit.core.defense import TransformDefense
from shieldkit.core.errors import InvalidParameterError
from shieldkit.core.validation import check_int_between

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance).
LUMINANCE_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMINANCE_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4


class JPEG(TransformDefense):
    """Compress and decompress each image as JPEG at ``quality`` (libjpeg's quality scaling).

    Grayscale images (and images with other than 3 channels, channel by channel)
    are coded as luminance; RGB images go through YCbCr with the chrominance
    subsampled 2x2 (4:2:0), like libjpeg's defaults. Pixels are 8-bit on the way
    in and out, as with a real codec. Entropy coding is lossless and left out.

    The coefficient rounding makes the defence non-differentiable: the adaptive
    attacker uses BPDA (identity backward, the default of ``attack_view``) or
    ``attack_view(gradient="surrogate")``, whose backward pass goes through the
    same codec with rounding replaced by Shin and Song's cubic approximation
    ``round(v) + (v - round(v))**3``.

    Args:
        quality: 1 (smallest file) to 100 (quantisation step 1).
        chroma_subsampling: subsample Cb and Cr 2x2 for RGB images.
        **common: ``bounds``, ``seed``.

    Shape:
        ``[B, C, H, W] -> [B, C, H, W]`` (any size: blocks are padded by edge replication and cropped).

    Reference:
        Dziugaite, Ghahramani, Roy. A study of the effect of JPG compression on adversarial
        images. 2016. Guo, Rana, Cisse, van der Maaten. Countering Adversarial Images using
        Input Transformations. ICLR 2018. Shin, Song. JPEG-resistant Adversarial Images. 2017.
    """

    family = "jpeg"
    differentiable = False
    randomized = False

    def __init__(self, *, quality: int = 75, chroma_subsampling: bool = True, **common):
        super().__init__(**common)
        self.quality = check_int_between(self.name, "quality", quality, 1, 100)
        if not isinstance(chroma_subsampling, bool):
            raise InvalidParameterError(
                f"{self.name}: chroma_subsampling must be True or False, got {chroma_subsampling!r}"
            )
        self.chroma_subsampling = chroma_subsampling

    def _transform(self, x: Tensor) -> Tensor:
        return self._codec(x, soft=False)

    def surrogate(self, x: Tensor) -> Tensor:
        """The codec with differentiable (cubic) rounding and no 8-bit pixel rounding."""
        return self._codec(x, soft=True).clamp(*self.bounds)

    def _codec(self, x: Tensor, soft: bool) -> Tensor:
        low, high = self.bounds
        pixels = (x - low) / (high - low) * 255.0
        decoded = jpeg_roundtrip(pixels, self.quality, soft=soft, chroma_subsampling=self.chroma_subsampling)
        return low + (high - low) * decoded / 255.0


def quantization_table(base: tuple, quality: int, like: Tensor) -> Tensor:
    """libjpeg's scaling of a base table: ``floor((base * s + 50) / 100)`` clipped to ``[1, 255]``."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    table = torch.tensor(base, dtype=like.dtype, device=like.device)
    return ((table * scale + 50) / 100).floor().clamp(1, 255)


def dct_matrix(like: Tensor, size: int = 8) -> Tensor:
    """The orthonormal DCT-II matrix ``D``: coefficients of a block ``B`` are ``D @ B @ D.T``."""
    k = torch.arange(size, dtype=like.dtype, device=like.device)
    matrix = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / (2 * size)) * math.sqrt(2 / size)
    matrix[0] = matrix[0] / math.sqrt(2)
    return matrix


def _round(values: Tensor, soft: bool) -> Tensor:
    rounded = values.round()
    if not soft:
        return rounded
    rounded = rounded.detach()
    return rounded + (values - rounded) ** 3


def _sample(values: Tensor, soft: bool) -> Tensor:
    """An 8-bit sample (rounded and clipped) in the codec; the surrogate only clips."""
    return values.clamp(0, 255) if soft else values.round().clamp(0, 255)


def _code_plane(plane: Tensor, table: Tensor, soft: bool) -> Tensor:
    """Level shift, blockwise DCT, quantise, dequantise, inverse DCT: ``[B, H, W]`` with H, W multiples of 8."""
    batch, height, width = plane.shape
    blocks = (plane - 128).reshape(batch, height // 8, 8, width // 8, 8).transpose(2, 3)
    basis = dct_matrix(plane)
    coefficients = basis @ blocks @ basis.T
    coefficients = _round(coefficients / table, soft) * table
    blocks = basis.T @ coefficients @ basis
    return blocks.transpose(2, 3).reshape(batch, height, width) + 128


def _pad_to(images: Tensor, multiple: int) -> Tensor:
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")


def jpeg_roundtrip(pixels: Tensor, quality: int, soft: bool = False, chroma_subsampling: bool = True) -> Tensor:
    """Encode and decode images with pixel values in ``[0, 255]``; the result is in ``[0, 255]``.

    ``soft=True`` keeps every step differentiable (the surrogate): no 8-bit
    rounding of pixels, cubic rounding of coefficients.

    Shape:
        ``[B, C, H, W] -> [B, C, H, W]``.
    """
    batch, channels, height, width = pixels.shape
    if not soft:
        pixels = pixels.round()
    luminance = quantization_table(LUMINANCE_TABLE, quality, pixels)
    if channels == 3:
        decoded = _roundtrip_color(pixels, quality, luminance, soft, chroma_subsampling)
    else:
        planes = _pad_to(pixels, 8).flatten(0, 1)
        decoded = _code_plane(planes, luminance, soft).view(batch, channels, *planes.shape[-2:])
    decoded = decoded[..., :height, :width]
    if not soft:
        decoded = decoded.round()
    return decoded.clamp(0, 255)


def _roundtrip_color(pixels: Tensor, quality: int, luminance: Tensor, soft: bool, subsample: bool) -> Tensor:
    chrominance = quantization_table(CHROMINANCE_TABLE, quality, pixels)
    padded = _pad_to(pixels, 16 if subsample else 8)
    red, green, blue = padded.unbind(1)
    y = 0.299 * red + 0.587 * green + 0.114 * blue
    cb = -0.168736 * red - 0.331264 * green + 0.5 * blue + 128
    cr = 0.5 * red - 0.418688 * green - 0.081312 * blue + 128
    # A codec stores Y, Cb and Cr as 8-bit samples, before coding and after decoding.
    y = _sample(_code_plane(_sample(y, soft), luminance, soft), soft)
    chroma = _sample(torch.stack([cb, cr], 1), soft)
    if subsample:
        chroma = _sample(F.avg_pool2d(chroma, 2), soft)
    batch, _, height, width = chroma.shape
    chroma = _sample(_code_plane(chroma.flatten(0, 1), chrominance, soft).view(batch, 2, height, width), soft)
    if subsample:
        chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = chroma[:, 0] - 128, chroma[:, 1] - 128
    red = y + 1.402 * cr
    green = y - 0.344136 * cb - 0.714136 * cr
    blue = y + 1.772 * cb
    return torch.stack([red, green, blue], 1)
