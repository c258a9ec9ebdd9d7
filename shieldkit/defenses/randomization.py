"""Random resizing and padding (Xie et al. 2018), scaled to the input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from shieldkit.core.defense import TransformDefense
from shieldkit.core.errors import InvalidInputError, InvalidParameterError
from shieldkit.core.validation import check_int

#: with no sizes given, images shrink to a random size in ``[floor(0.8 * out), out)``.
DEFAULT_SHRINK = 0.8


class Randomization(TransformDefense):
    """Resize each image to a random size, then zero-pad it at a random offset to a fixed size.

    Xie et al. resize 299x299 ImageNet images to ``[299, 331)`` and pad to 331.
    For a model that only takes its training size, the image is instead shrunk
    and padded back: a 28x28 MNIST image becomes ``s x s`` with ``s`` in
    ``[22, 28)`` and lands at a random place on a 28x28 black canvas (the
    defaults). Each image of a batch gets its own size and offset.

    Resizing is bilinear and padding is constant, so the defence is
    differentiable: the adaptive attacker uses the exact gradient averaged over
    random draws (``attack_view(gradient="exact", eot=N)``, Athalye et al. 2018).

    Args:
        min_size: smallest resized height (inclusive); default ``floor(0.8 * output_size)``.
        max_size: largest resized height (exclusive); default ``output_size``, or
            ``output_size + 1`` when that is smaller than ``min_size + 1``.
        output_size: height of the padded output; default the input's height (a
            model with global pooling can take a larger one, as in the paper).
            Widths follow the input's aspect ratio.
        **common: ``bounds``, ``seed`` (the defence's own RNG).

    Shape:
        ``[B, C, H, W] -> [B, C, out, round(out * W / H)]`` (the input's shape by default).

    Reference:
        Xie, Wang, Zhang, Ren, Yuille. Mitigating Adversarial Effects Through
        Randomization. ICLR 2018.
    """

    family = "randomization"
    differentiable = True
    randomized = True

    def __init__(
        self,
        *,
        min_size: int | None = None,
        max_size: int | None = None,
        output_size: int | None = None,
        **common,
    ):
        super().__init__(**common)
        owner = self.name
        for name, value in (("min_size", min_size), ("max_size", max_size), ("output_size", output_size)):
            if value is not None:
                check_int(owner, name, value, minimum=1)
        if min_size is not None and max_size is not None and max_size <= min_size:
            raise InvalidParameterError(
                f"{owner}: max_size (exclusive) must be larger than min_size, got min_size={min_size}, max_size={max_size}"
            )
        if output_size is not None:
            for name, value, limit in (("min_size", min_size, output_size), ("max_size", max_size, output_size + 1)):
                if value is not None and value > limit:
                    raise InvalidParameterError(
                        f"{owner}: {name}={value} does not fit in output_size={output_size} "
                        "(resized images are padded, never cropped)"
                    )
        self.min_size = min_size
        self.max_size = max_size
        self.output_size = output_size

    def sizes(self, height: int) -> tuple[int, int, int]:
        """``(min_size, max_size, output_size)`` for inputs of this height."""
        out = self.output_size if self.output_size is not None else height
        low = self.min_size if self.min_size is not None else max(1, int(DEFAULT_SHRINK * out))
        high = self.max_size if self.max_size is not None else max(out, low + 1)
        if high - 1 > out or low >= high:
            raise InvalidInputError(
                f"{self.name}: resized heights [{low}, {high}) do not fit in an output of {out} rows "
                f"(input height {height}); set output_size"
            )
        return low, high, out

    def _transform(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        low_size, high_size, out_h = self.sizes(height)
        out_w = max(1, round(out_h * width / height))
        generator = self.rng(x.device)
        size_h = torch.randint(low_size, high_size, (batch,), generator=generator, device=x.device)
        size_w = (size_h.to(x.dtype) * (width / height)).round().clamp(1, out_w).long()
        # Offsets uniform over the free space: rand * (slack + 1), floored.
        top = (torch.rand(batch, generator=generator, device=x.device, dtype=x.dtype)
               * (out_h - size_h + 1)).floor().long()
        left = (torch.rand(batch, generator=generator, device=x.device, dtype=x.dtype)
                * (out_w - size_w + 1)).floor().long()
        return resize_and_pad(x, size_h, size_w, top, left, out_h, out_w, fill=self.bounds[0])


def resize_and_pad(x: Tensor, size_h: Tensor, size_w: Tensor, top: Tensor, left: Tensor,
                   out_h: int, out_w: int, fill: float = 0.0) -> Tensor:
    """Bilinearly resize image ``i`` to ``size_h[i] x size_w[i]`` and place it at ``(top[i], left[i])``.

    One ``grid_sample`` for the whole batch; equal to ``F.interpolate(mode="bilinear",
    align_corners=False)`` followed by constant padding with ``fill``, and differentiable in ``x``.

    Shape:
        x ``[B, C, H, W]``; the size and offset tensors ``[B]``; output ``[B, C, out_h, out_w]``.
    """
    batch = x.shape[0]
    dtype = x.dtype
    sh, sw = size_h.to(dtype), size_w.to(dtype)
    # Output pixel p maps to normalised input coordinate g * out / s + (out - 2 * offset) / s - 1,
    # where g is p's own normalised coordinate (align_corners=False throughout).
    theta = torch.zeros(batch, 2, 3, dtype=dtype, device=x.device)
    theta[:, 0, 0] = out_w / sw
    theta[:, 0, 2] = (out_w - 2 * left.to(dtype)) / sw - 1
    theta[:, 1, 1] = out_h / sh
    theta[:, 1, 2] = (out_h - 2 * top.to(dtype)) / sh - 1
    grid = F.affine_grid(theta, [batch, x.shape[1], out_h, out_w], align_corners=False)
    # "border" clamps like interpolate does at the image's own edges; the mask then pads.
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    rows = torch.arange(out_h, device=x.device)[None, :]
    cols = torch.arange(out_w, device=x.device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + size_h)[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < (left + size_w)[:, None])
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None].to(dtype)
    return fill + mask * (sampled - fill)
