"""``ImageData``: a labelled batch of images in pixel space, as every loader returns it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from shieldkit.core.errors import InvalidInputError, InvalidParameterError

__all__ = ["ImageData"]


class ImageData:
    """Images in ``[0, 1]`` with their integer labels, class names and provenance.

    Indexing with an integer gives one ``(image, label)`` pair, so an ``ImageData``
    is also a map-style dataset for ``torch.utils.data.DataLoader``; indexing with a
    slice, a list or a tensor of indices gives a smaller ``ImageData``.

    Args:
        x: float images in ``[0, 1]`` (converted to float32).
        y: integer labels in ``[0, len(classes))`` (converted to int64).
        classes: one name per class; ``None`` names them ``"0"``, ``"1"``, ... up
            to the largest label.
        name: the dataset's name, e.g. ``"mnist"``.
        split: which part of the dataset, e.g. ``"train"`` or ``"test"``.

    Shape:
        x: ``[N, C, H, W]``; y: ``[N]``.

    Raises:
        TypeError: ``x`` or ``y`` is not a tensor.
        ValueError: shapes, dtypes, value ranges or class names do not fit together.
    """

    __slots__ = ("x", "y", "classes", "name", "split")

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        classes: Sequence[str] | None = None,
        name: str = "custom",
        split: str = "",
    ):
        self.x = _checked_images(x)
        self.y = _checked_labels(y, self.x.shape[0])
        if self.x.device != self.y.device:
            raise ValueError(
                f"ImageData: x is on {self.x.device} but y on {self.y.device}; move both to one device"
            )
        if classes is None:
            largest = int(self.y.max()) if self.y.numel() else -1
            classes = [str(index) for index in range(largest + 1)]
        self.classes = tuple(str(c) for c in classes)
        if self.y.numel() and int(self.y.max()) >= len(self.classes):
            raise ValueError(
                f"ImageData: label {int(self.y.max())} found in y but only "
                f"{len(self.classes)} class names were given"
            )
        self.name = str(name)
        self.split = str(split)

    # -- sizes -------------------------------------------------------------------

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(classes)``."""
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one image, ``(C, H, W)``."""
        channels, height, width = self.x.shape[1:]
        return (channels, height, width)

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.x.device

    # -- selection ---------------------------------------------------------------

    def __getitem__(self, index):
        """``data[i] -> (x[i], y[i])``; ``data[slice or indices] -> ImageData``."""
        if isinstance(index, int) or (
            isinstance(index, torch.Tensor) and index.dim() == 0 and not index.is_floating_point()
        ):
            return self.x[index], self.y[index]
        if isinstance(index, (slice, list, tuple, range, torch.Tensor)):
            if isinstance(index, (list, tuple, range)):
                index = torch.as_tensor(list(index), dtype=torch.long)
            return self._replace(self.x[index], self.y[index])
        raise TypeError(
            f"ImageData indices must be an int, a slice or a sequence of ints, "
            f"got {type(index).__name__}"
        )

    def subset(self, n: int, seed: int = 0) -> ImageData:
        """A deterministic random subset of ``n`` samples (without replacement).

        Args:
            n: how many samples, ``1 <= n <= len(self)``.
            seed: the same seed always picks the same samples; ``subset(m, seed)``
                with ``m < n`` is a prefix of ``subset(n, seed)``.

        Returns:
            A new ``ImageData`` with the samples in random order.
        """
        self._check_count(n, "subset")
        generator = torch.Generator().manual_seed(int(seed))
        indices = torch.randperm(len(self), generator=generator)[:n]
        return self._replace(self.x[indices.to(self.device)], self.y[indices.to(self.device)])

    def head(self, n: int) -> ImageData:
        """The first ``n`` samples, ``1 <= n <= len(self)``."""
        self._check_count(n, "head")
        return self[:n]

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over ``(x, y)`` mini-batches; the last one may be smaller.

        Args:
            batch_size: samples per batch, at least 1.
            shuffle: visit the samples in a random order fixed by ``seed``.
            seed: the seed of that order.

        Shape:
            yields x ``[B, C, H, W]``, y ``[B]`` with ``B <= batch_size``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batches: batch_size must be an int >= 1, got {batch_size!r}")
        if shuffle:
            generator = torch.Generator().manual_seed(int(seed))
            order = torch.randperm(len(self), generator=generator).to(self.device)
        else:
            order = None
        for start in range(0, len(self), batch_size):
            if order is None:
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]
            else:
                chosen = order[start : start + batch_size]
                yield self.x[chosen], self.y[chosen]

    def to(self, device: torch.device | str) -> ImageData:
        """The same data on ``device`` (``self`` when it is already there)."""
        device = torch.device(device)
        if self.x.device == device and self.y.device == device:
            return self
        return self._replace(self.x.to(device), self.y.to(device))

    # -- helpers -----------------------------------------------------------------

    def _replace(self, x: torch.Tensor, y: torch.Tensor) -> ImageData:
        """A new ``ImageData`` with other tensors and the same metadata, not re-validated."""
        new = object.__new__(ImageData)
        new.x, new.y = x, y
        new.classes, new.name, new.split = self.classes, self.name, self.split
        return new

    def _check_count(self, n, method: str) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{method}: n must be an int, got {type(n).__name__}")
        if not 1 <= n <= len(self):
            raise ValueError(
                f"{method}: n must be between 1 and the {len(self)} samples of "
                f"{self.name!r} ({self.split}), got n={n}"
            )

    def __repr__(self) -> str:
        return (
            f"ImageData(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={self.shape}, classes={self.num_classes}, device={self.device})"
        )


def _checked_images(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"ImageData: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"ImageData: x must have shape [N, C, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"ImageData: x must be a float tensor with values in [0, 1], got dtype {x.dtype}"
            + (" (divide uint8 pixels by 255)" if x.dtype == torch.uint8 else "")
        )
    x = x.to(torch.float32)
    if x.numel():
        low, high = torch.aminmax(x)
        # NaN fails both comparisons, so it is reported here too.
        if not (low >= 0 and high <= 1):
            raise ValueError(
                f"ImageData: x must lie in [0, 1], found values from {low.item()} to {high.item()}"
            )
    return x


def _checked_labels(y, count: int) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"ImageData: y must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1:
        raise ValueError(f"ImageData: y must have shape [N], got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"ImageData: y must hold integer labels, got dtype {y.dtype}")
    if y.shape[0] != count:
        raise ValueError(f"ImageData: x has {count} images but y has {y.shape[0]} labels")
    y = y.to(torch.int64)
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"ImageData: labels must be >= 0, found {int(y.min())}")
    return y


def as_image_data(data: object, argument: str, *, owner: str = "", split: str = "") -> ImageData:
    """``data`` as ``ImageData``: an ``ImageData`` as it is, an ``(x, y)`` pair of tensors wrapped (named
    ``custom``, of ``split``). Anything else is a one-line error naming ``argument`` (after ``owner:`` when given):
    a wrong type is an ``InvalidParameterError`` (a ``TypeError`` too), a pair that is no image data an
    ``InvalidInputError``."""
    where = f"{owner}: {argument}" if owner else argument
    if isinstance(data, ImageData):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        try:
            return ImageData(data[0], data[1], name="custom", split=split)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"{where}: {error}") from None
    raise InvalidParameterError(f"{where} must be ImageData or an (x, y) pair of tensors, got {type(data).__name__}")

