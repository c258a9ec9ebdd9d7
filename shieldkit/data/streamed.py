"""Evaluation data that stays where it is: a map-style dataset read one chunk at a time.

A user's pipeline hands shieldkit a ``Dataset`` or a ``DataLoader``, NumPy arrays or
tensors. :func:`as_eval_data` turns each into what the evaluation reads:

- tensors and NumPy arrays (already in memory) become :class:`ImageData`;
- a ``TensorDataset`` (or a ``DataLoader`` over one) becomes ``ImageData`` of its tensors;
- any other map-style dataset, or a ``DataLoader`` over one, becomes :class:`StreamedData`:
  the labels are read up front (from ``targets``/``labels`` attributes or a label column
  when the dataset has one, else by one pass that keeps only the labels), and the images
  are read when a chunk asks for them, so memory is bounded by the chunk, not the dataset;
- a ``DataLoader`` over an ``IterableDataset`` cannot be indexed by chunk, so it is read
  into memory once (a warning says so).

An item of the dataset is an ``(image, label)`` pair (a tuple or list; more elements are
ignored) or a dict. For a dict the image is the first of :data:`IMAGE_KEYS` present and
the label the first of :data:`LABEL_KEYS` (Hugging Face's ``{"pixel_values", "label"}``
works as it is); ``keys=("img", "fine_label")`` names them. An image is a tensor, a NumPy
array or a PIL image: ``[C, H, W]``, ``[H, W, C]`` (channels last, C = 1 or 3) or
``[H, W]``; ``uint8`` in ``[0, 255]`` or floating in ``[0, 1]``. Normalisation belongs in
the model (:class:`~shieldkit.core.layers.Normalize`), not in the dataset's transform.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from shieldkit.core.errors import InvalidInputError, InvalidParameterError
from shieldkit.data.imagedata import ImageData

__all__ = ["IMAGE_KEYS", "LABEL_KEYS", "StreamedData", "as_eval_data"]

logger = logging.getLogger(__name__)

#: The keys an item's image is looked up under, in order, when an item is a dict.
IMAGE_KEYS = ("image", "pixel_values", "img", "images", "x", "input", "inputs")
#: The keys an item's label is looked up under, in order, when an item is a dict.
LABEL_KEYS = ("label", "labels", "target", "targets", "y", "class", "fine_label")
_CHANNELS = (1, 3)
_CACHED_READS = 2  # the chunk being attacked and the one before it: units of one chunk read it once


class StreamedData:
    """The samples of a map-style dataset, read when asked for: the evaluation's view of a user's pipeline.

    ``data.x[i]``, ``data.x[start:end]`` and ``data.x[indices]`` read those images from the dataset (the last
    reads are cached); ``data.y`` holds every label. Indexing ``data`` itself follows :class:`ImageData`: an
    int gives one ``(image, label)`` pair, a slice or indices a smaller ``StreamedData`` over the same dataset.

    Args:
        dataset: any object with ``__len__`` and ``__getitem__(i)`` returning an item (module docstring).
        classes: one name per class; ``None``: the dataset's ``classes`` attribute, else ``"0"``, ``"1"``, ...
        name: the dataset's name in reports.
        split: which part of the dataset.
        labels: every sample's label, when known (then no item is read to learn them).
        keys: ``(image_key, label_key)`` of dict items; ``None`` looks up :data:`IMAGE_KEYS`/:data:`LABEL_KEYS`.
        num_workers: worker processes that read a chunk's items (``0``: this process).

    Raises:
        InvalidInputError: an item is not an image with a label, or the labels do not fit the classes.
    """

    def __init__(self, dataset: Any, *, classes: Sequence[str] | None = None, name: str = "custom",
                 split: str = "", labels: Any = None, keys: tuple[str, str] | None = None, num_workers: int = 0,
                 _indices: torch.Tensor | None = None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise InvalidParameterError(f"data: a {type(dataset).__name__} has no __len__/__getitem__; give a "
                                        "map-style dataset, a DataLoader, ImageData or an (x, y) pair")
        if keys is not None and not (isinstance(keys, (tuple, list)) and len(keys) == 2
                                     and all(isinstance(k, str) for k in keys)):
            raise InvalidParameterError(f"keys: expected (image_key, label_key), got {keys!r}")
        self.dataset = dataset
        self.keys = tuple(keys) if keys is not None else None
        self.num_workers = int(num_workers)
        self.name, self.split = str(name), str(split)
        self._indices = torch.arange(len(dataset)) if _indices is None else _indices
        self._cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        self.y = self._labels(labels) if _indices is None else labels
        if classes is None:
            classes = getattr(dataset, "classes", None)
        if classes is None or isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
            largest = int(self.y.max()) if self.y.numel() else -1
            classes = [str(index) for index in range(largest + 1)]
        self.classes = tuple(str(c) for c in classes)
        if self.y.numel() and int(self.y.max()) >= len(self.classes):
            raise InvalidInputError(f"data: label {int(self.y.max())} found but only {len(self.classes)} class "
                                    "names were given")
        self.x = _LazyImages(self)

    # -- sizes -------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._indices.numel())

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(classes)``."""
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one image, ``(C, H, W)`` (reads the first image)."""
        channels, height, width = self.x[0].shape
        return (channels, height, width)

    @property
    def device(self) -> torch.device:
        """Images are read to the CPU; the evaluation moves each chunk to the model's device."""
        return torch.device("cpu")

    # -- selection ---------------------------------------------------------------

    def __getitem__(self, index):
        """``data[i] -> (image, label)``; ``data[slice or indices] -> StreamedData`` (nothing is read)."""
        if isinstance(index, int) or (isinstance(index, torch.Tensor) and index.dim() == 0):
            return self.x[int(index)], self.y[int(index)]
        if isinstance(index, (slice, list, tuple, range, torch.Tensor)):
            positions = _positions(index, len(self))
            return self._replace(self._indices[positions], self.y[positions])
        raise TypeError(f"StreamedData indices must be an int, a slice or a sequence of ints, "
                        f"got {type(index).__name__}")

    def subset(self, n: int, seed: int = 0) -> StreamedData:
        """A deterministic random subset of ``n`` samples, as :meth:`ImageData.subset` draws it (nothing is read)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self):
            raise ValueError(f"subset: n must be an int between 1 and {len(self)}, got {n!r}")
        generator = torch.Generator().manual_seed(int(seed))
        return self[torch.randperm(len(self), generator=generator)[:n]]

    def head(self, n: int) -> StreamedData:
        """The first ``n`` samples."""
        return self[:n]

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x, y)`` mini-batches in order (``shuffle`` as :meth:`ImageData.batches`), each read when reached."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batches: batch_size must be an int >= 1, got {batch_size!r}")
        order = (torch.randperm(len(self), generator=torch.Generator().manual_seed(int(seed))) if shuffle
                 else torch.arange(len(self)))
        for start in range(0, len(self), batch_size):
            chosen = order[start:start + batch_size]
            yield self.x[chosen], self.y[chosen]

    def to(self, device: torch.device | str) -> StreamedData:
        """``self``: chunks are moved to the device when they are read."""
        return self

    def materialize(self) -> ImageData:
        """Every image read into one :class:`ImageData` (for small sets, e.g. fitting a defence)."""
        return ImageData(self.x[:], self.y, classes=self.classes, name=self.name, split=self.split)

    def fingerprint_images(self, count: int = 64) -> torch.Tensor:
        """The first ``count`` images: what a resume compares, beside every label, without reading the whole set."""
        return self.x[: min(count, len(self))]

    # -- reading -----------------------------------------------------------------

    def read(self, positions: torch.Tensor) -> torch.Tensor:
        """The images at ``positions`` (of this view) as one float32 tensor ``[B, C, H, W]`` on the CPU."""
        key = tuple(int(p) for p in positions.tolist())
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        items = self._items([int(self._indices[p]) for p in key])
        images = [_image(self._pair(item, int(self._indices[p]))[0], int(self._indices[p]), self.name)
                  for p, item in zip(key, items)]
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) > 1:
            raise InvalidInputError(f"data: images of one chunk have different shapes {sorted(shapes)}; resize or "
                                    "crop them to one size in the dataset's transform")
        batch = torch.stack(images) if images else torch.empty(0)
        self._cache[key] = batch
        while len(self._cache) > _CACHED_READS:
            self._cache.popitem(last=False)
        return batch

    def _items(self, indices: list[int]) -> list[Any]:
        if self.num_workers > 0 and len(indices) > 1:
            from torch.utils.data import DataLoader, Subset

            loader = DataLoader(Subset(self.dataset, indices), batch_size=len(indices),
                                num_workers=self.num_workers, collate_fn=list)
            return next(iter(loader))
        return [self.dataset[index] for index in indices]

    def _pair(self, item: Any, index: int) -> tuple[Any, Any]:
        if isinstance(item, Mapping):
            image_key, label_key = self.keys or (_first_key(item, IMAGE_KEYS), _first_key(item, LABEL_KEYS))
            if image_key not in item or label_key not in item:
                raise InvalidInputError(
                    f"data: item {index} is a dict with keys {sorted(map(str, item))}; name its image and label "
                    f"with keys=(image_key, label_key) (looked for {IMAGE_KEYS[:3]} and {LABEL_KEYS[:3]})")
            return item[image_key], item[label_key]
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            return item[0], item[1]
        raise InvalidInputError(f"data: item {index} of the dataset is a {type(item).__name__}; expected an "
                                "(image, label) pair or a dict with an image and a label")

    def _labels(self, labels: Any) -> torch.Tensor:
        n = len(self.dataset)
        if labels is None:
            labels = _label_attribute(self.dataset, n, self.keys)
        if labels is None:
            logger.info("reading the labels of %d samples of %s (give labels= or a targets attribute to skip this)",
                        n, self.name)
            labels = [self._pair(self.dataset[index], index)[1] for index in range(n)]
        try:
            tensor = torch.as_tensor([_label(label) for label in labels], dtype=torch.int64)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"data: labels must be integers: {error}") from None
        if tensor.numel() != n:
            raise InvalidInputError(f"data: {tensor.numel()} labels for {n} samples")
        if n and int(tensor.min()) < 0:
            raise InvalidInputError(f"data: labels must be >= 0, found {int(tensor.min())}")
        return tensor

    def _replace(self, indices: torch.Tensor, labels: torch.Tensor) -> StreamedData:
        return StreamedData(self.dataset, classes=self.classes, name=self.name, split=self.split, labels=labels,
                            keys=self.keys, num_workers=self.num_workers, _indices=indices)

    def __repr__(self) -> str:
        return (f"StreamedData(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, dataset={type(self.dataset).__name__})")


class _LazyImages:
    """``StreamedData.x``: indexed like the image tensor it stands for, reading only what is asked."""

    __slots__ = ("_owner",)

    def __init__(self, owner: StreamedData):
        self._owner = owner

    def __len__(self) -> int:
        return len(self._owner)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int) or (isinstance(index, torch.Tensor) and index.dim() == 0):
            position = int(index) + (len(self) if int(index) < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"index {int(index)} is out of range for {len(self)} samples")
            return self._owner.read(torch.tensor([position]))[0]
        return self._owner.read(_positions(index, len(self)))


def as_eval_data(data: Any, argument: str = "data", *, keys: tuple[str, str] | None = None) -> ImageData | StreamedData:
    """``data`` as the evaluation reads it (module docstring); a one-line error naming ``argument`` otherwise."""
    from torch.utils.data import DataLoader, IterableDataset, TensorDataset

    if isinstance(data, (ImageData, StreamedData)):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and not _is_item_sequence(data):
        x, y = data
        try:
            if not isinstance(x, torch.Tensor):
                from shieldkit.data.tensors import images_from_array

                x = images_from_array(x, None, f"{argument}[0]")
            if not isinstance(y, torch.Tensor):
                y = torch.as_tensor(y)
            return ImageData(x, y, name="custom")
        except (TypeError, ValueError, RuntimeError) as error:
            raise InvalidInputError(f"{argument}: {error}") from None
    num_workers = 0
    if isinstance(data, DataLoader):
        num_workers = data.num_workers
        if isinstance(data.dataset, IterableDataset):
            logger.warning("%s: the DataLoader's dataset is iterable, so it cannot be read by chunk; reading all of "
                           "it into memory", argument)
            batches = [_batch(batch, keys, argument) for batch in data]
            return as_eval_data((torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])), argument)
        if not isinstance(data.sampler, torch.utils.data.SequentialSampler):
            logger.info("%s: the DataLoader's sampler is ignored: shieldkit reads its dataset in index order so that "
                        "chunks, seeds and resume are reproducible", argument)
        data = data.dataset
    if isinstance(data, TensorDataset) and len(data.tensors) >= 2:
        return as_eval_data((data.tensors[0], data.tensors[1]), argument)
    if isinstance(data, IterableDataset):
        raise InvalidParameterError(f"{argument}: an IterableDataset cannot be read by chunk; wrap it in a DataLoader "
                                    "(read into memory) or give a map-style dataset")
    if hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, Mapping)) \
            and not isinstance(data, torch.Tensor):
        if len(data) == 0:
            raise InvalidInputError(f"{argument}: the evaluation set is empty (0 samples)")
        return StreamedData(data, name=getattr(data, "name", None) or type(data).__name__.lower(),
                            keys=keys, num_workers=num_workers)
    raise InvalidParameterError(f"{argument} must be ImageData, an (x, y) pair of tensors or arrays, a map-style "
                                f"Dataset or a DataLoader, got {type(data).__name__}")


# -- helpers ------------------------------------------------------------------------


def _positions(index: Any, length: int) -> torch.Tensor:
    if isinstance(index, slice):
        return torch.arange(length)[index]
    positions = torch.as_tensor(list(index) if isinstance(index, (list, tuple, range)) else index, dtype=torch.long)
    if positions.dtype == torch.bool:
        positions = positions.nonzero().flatten()
    positions = positions.flatten()
    return torch.where(positions < 0, positions + length, positions)


def _first_key(item: Mapping, candidates: tuple[str, ...]) -> str:
    return next((key for key in candidates if key in item), candidates[0])


def _is_item_sequence(data: Any) -> bool:
    """A two-sample list of ``(image, label)`` items, as opposed to an ``(x, y)`` pair."""
    return all(isinstance(element, (tuple, list, Mapping)) for element in data)


def _label_attribute(dataset: Any, n: int, keys: tuple[str, str] | None) -> Any:
    for attribute in ("targets", "labels"):
        value = getattr(dataset, attribute, None)
        if value is not None and not callable(value) and hasattr(value, "__len__") and len(value) == n:
            return value
    columns = getattr(dataset, "column_names", None)  # a Hugging Face dataset: the label column, no image decoded
    if isinstance(columns, (list, tuple)):
        label_key = keys[1] if keys else _first_key(dict.fromkeys(columns), LABEL_KEYS)
        if label_key in columns:
            return dataset[label_key]
    return None


def _label(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_floating_point():
            raise ValueError(f"a label must be one integer, got a {value.dtype} tensor of shape {tuple(value.shape)}")
        return int(value.item())
    if hasattr(value, "dtype") and hasattr(value, "item"):  # a NumPy scalar or 0-d array
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a label must be an integer, got {value!r}")
    return value


def _image(value: Any, index: int, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        if hasattr(value, "mode") and hasattr(value, "size") and hasattr(value, "getbands"):  # a PIL image
            import numpy as np

            value = np.asarray(value)
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise InvalidInputError(f"data: the image of item {index} is a {type(value).__name__}; expected a tensor, "
                                    "a NumPy array or a PIL image") from None
    image = value.detach().cpu()
    if image.dim() == 2:
        image = image.unsqueeze(0)
    elif image.dim() == 3 and image.shape[0] not in _CHANNELS and image.shape[-1] in _CHANNELS:
        image = image.permute(2, 0, 1)
    if image.dim() != 3:
        raise InvalidInputError(f"data: the image of item {index} has shape {tuple(image.shape)}; expected "
                                "[C, H, W], [H, W, C] or [H, W]")
    if image.dtype == torch.uint8:
        return image.float().div_(255.0)
    if not image.is_floating_point():
        raise InvalidInputError(f"data: the image of item {index} is {image.dtype}; expected uint8 in [0, 255] or "
                                "floating in [0, 1]")
    image = image.float()
    low, high = torch.aminmax(image)
    if not (low >= 0 and high <= 1):
        raise InvalidInputError(
            f"data: the image of item {index} of {name} has values from {low.item():.3g} to {high.item():.3g}, "
            "outside [0, 1]; if the dataset's transform normalises, move the normalisation into the model "
            "(shieldkit.Normalize, --normalize)")
    return image


def _batch(batch: Any, keys: tuple[str, str] | None, argument: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        image_key, label_key = keys or (_first_key(batch, IMAGE_KEYS), _first_key(batch, LABEL_KEYS))
        batch = (batch.get(image_key), batch.get(label_key))
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor)):
        raise InvalidInputError(f"{argument}: a batch of the DataLoader is a {type(batch).__name__}; expected "
                                "(images, labels) tensors")
    images = batch[0]
    if images.dtype == torch.uint8:
        images = images.float().div(255.0)
    return images, torch.as_tensor(batch[1])
