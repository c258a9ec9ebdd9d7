"""CIFAR-10 and CIFAR-100, read from their official archives: never downloaded, never extracted.

The loaders look in the data folder (:func:`~shieldkit.data.idx.data_root`: ``root=``, else
``$SHIELDKIT_DATA``, else ``~/.cache/shieldkit/data``), or in its ``cifar10/`` / ``cifar100/``
sub-folder, for the archive as downloaded or its extracted folder, the binary version first:

============  ==============================  =================================================
dataset       archive                         extracted folder and files
============  ==============================  =================================================
CIFAR-10      ``cifar-10-binary.tar.gz``      ``cifar-10-batches-bin/``: ``data_batch_1.bin`` ...
                                              ``data_batch_5.bin``, ``test_batch.bin``,
                                              ``batches.meta.txt``
CIFAR-10      ``cifar-10-python.tar.gz``      ``cifar-10-batches-py/``: ``data_batch_1`` ...
                                              ``data_batch_5``, ``test_batch``, ``batches.meta``
CIFAR-100     ``cifar-100-binary.tar.gz``     ``cifar-100-binary/``: ``train.bin``, ``test.bin``,
                                              ``coarse_label_names.txt``, ``fine_label_names.txt``
CIFAR-100     ``cifar-100-python.tar.gz``     ``cifar-100-python/``: ``train``, ``test``, ``meta``
============  ==============================  =================================================

Binary batches are records of one label byte (CIFAR-10) or a coarse and a fine label byte
(CIFAR-100) followed by 3,072 pixel bytes: the 1,024 red, then green, then blue values of a
32x32 image, row by row. The python version's batches are pickles of dicts (``b"data"``: a
uint8 array ``[N, 3072]`` in the same layout; ``b"labels"``, or ``b"fine_labels"`` and
``b"coarse_labels"``). Unpickling can run any code a file asks for, so they are read by
an unpickler that builds the NumPy arrays those files hold and refuses every other name: a
file that asks for anything else is refused (``InvalidInputError``) and nothing in it runs.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shieldkit.core.errors import DatasetNotFoundError, InvalidInputError
from shieldkit.core.validation import check_choice
from shieldkit.data.idx import data_root
from shieldkit.data.imagedata import ImageData

__all__ = ["CIFAR100_COARSE_CLASSES", "CIFAR100_FINE_CLASSES", "CIFAR10_CLASSES", "cifar10", "cifar100"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

CIFAR100_COARSE_CLASSES: tuple[str, ...] = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)

CIFAR100_FINE_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

PIXELS = 3 * 32 * 32
SPLITS = ("train", "test")


@dataclass(frozen=True)
class _Version:
    """One official version (binary or python) of one dataset: its archive, folder and files."""

    kind: str  # "binary" or "python"
    archive: str
    folder: str
    files: dict[str, tuple[str, ...]]  # split -> batch files
    meta: str  # the class names' file (CIFAR-100 binary: the fine names; the coarse ones are beside)


_VERSIONS: dict[str, tuple[_Version, _Version]] = {
    "cifar10": (
        _Version("binary", "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                 {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
                 "batches.meta.txt"),
        _Version("python", "cifar-10-python.tar.gz", "cifar-10-batches-py",
                 {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
                 "batches.meta"),
    ),
    "cifar100": (
        _Version("binary", "cifar-100-binary.tar.gz", "cifar-100-binary",
                 {"train": ("train.bin",), "test": ("test.bin",)}, "fine_label_names.txt"),
        _Version("python", "cifar-100-python.tar.gz", "cifar-100-python",
                 {"train": ("train",), "test": ("test",)}, "meta"),
    ),
}

_COARSE_NAMES_FILE = "coarse_label_names.txt"


# ------------------------------------------------------------------ the loaders


def cifar10(split: str = "test", root: str | os.PathLike | None = None) -> ImageData:
    """CIFAR-10: 32x32 colour photographs in 10 classes, from the official archive.

    50,000 train and 10,000 test images. Reads ``cifar-10-binary.tar.gz`` (or its extracted
    ``cifar-10-batches-bin/``), else ``cifar-10-python.tar.gz`` (or ``cifar-10-batches-py/``,
    whose pickles are read by a restricted unpickler that runs nothing), as found in the data
    folder or its ``cifar10/`` sub-folder; never downloads.

    Conventional normalisation: ``--normalize cifar10`` (mean ``(0.4914, 0.4822, 0.4465)``,
    std ``(0.2470, 0.2435, 0.2616)``; :data:`~shieldkit.data.normalization.NORMALIZATIONS`).

    Args:
        split: ``"train"`` or ``"test"``.
        root: the data folder; ``None`` uses ``$SHIELDKIT_DATA``, else ``~/.cache/shieldkit/data``.

    Returns:
        ``ImageData`` named ``"cifar10"`` with classes ``"airplane"`` ... ``"truck"``.

    Shape:
        x ``[N, 3, 32, 32]`` float32 in ``[0, 1]``; y ``[N]`` int64.

    Raises:
        DatasetNotFoundError: no archive or folder was found (the message says what to put where).
        InvalidInputError: a file is not a CIFAR batch (a python batch asking to run code included).

    Reference:
        A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", technical report, 2009.
    """
    split = check_choice("cifar10", "split", split, SPLITS)
    pixels, labels, classes = _load("cifar10", split, root, "fine")
    return _image_data("cifar10", split, pixels, labels, classes)


def cifar100(split: str = "test", root: str | os.PathLike | None = None, *, label: str = "fine") -> ImageData:
    """CIFAR-100: 32x32 colour photographs in 100 classes (or their 20 superclasses), from the official archive.

    50,000 train and 10,000 test images. Reads ``cifar-100-binary.tar.gz`` (or its extracted
    ``cifar-100-binary/``), else ``cifar-100-python.tar.gz`` (or ``cifar-100-python/``, whose
    pickles are read by a restricted unpickler that runs nothing), as found in the data folder
    or its ``cifar100/`` sub-folder; never downloads.

    Conventional normalisation: ``--normalize cifar100`` (mean ``(0.5071, 0.4865, 0.4409)``,
    std ``(0.2673, 0.2564, 0.2762)``; :data:`~shieldkit.data.normalization.NORMALIZATIONS`).

    Args:
        split: ``"train"`` or ``"test"``.
        root: the data folder; ``None`` uses ``$SHIELDKIT_DATA``, else ``~/.cache/shieldkit/data``.
        label: ``"fine"`` (100 classes, ``"apple"`` ... ``"worm"``) or ``"coarse"`` (20 superclasses,
            ``"aquatic_mammals"`` ... ``"vehicles_2"``).

    Returns:
        ``ImageData`` named ``"cifar100"`` (``"cifar100-coarse"`` with ``label="coarse"``).

    Shape:
        x ``[N, 3, 32, 32]`` float32 in ``[0, 1]``; y ``[N]`` int64.

    Raises:
        DatasetNotFoundError: no archive or folder was found (the message says what to put where).
        InvalidInputError: a file is not a CIFAR batch (a python batch asking to run code included).

    Reference:
        A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", technical report, 2009.
    """
    split = check_choice("cifar100", "split", split, SPLITS)
    label = check_choice("cifar100", "label", label, ("fine", "coarse"))
    pixels, labels, classes = _load("cifar100", split, root, label)
    name = "cifar100" if label == "fine" else "cifar100-coarse"
    return _image_data(name, split, pixels, labels, classes)


def _image_data(name: str, split: str, pixels: torch.Tensor, labels: torch.Tensor,
                classes: tuple[str, ...]) -> ImageData:
    x = pixels.reshape(-1, 3, 32, 32).to(torch.float32).div_(255.0)
    return ImageData(x, labels.to(torch.int64), classes=classes, name=name, split=split)


# ------------------------------------------------------------------ finding the files


class _Source:
    """An extracted folder or a ``.tar.gz`` archive holding one version's folder; reads members by name."""

    def __init__(self, dataset: str, version: _Version, path: Path, archive: bool):
        self.dataset, self.version, self.path, self.archive = dataset, version, path, archive

    def where(self, name: str) -> str:
        """How a member is named in messages: the file, or ``archive:folder/name``."""
        return f"{self.path}:{self.version.folder}/{name}" if self.archive else str(self.path / name)

    def read(self, names: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, bytes]:
        """The bytes of each of ``names`` (all required) and of those of ``optional`` that exist."""
        wanted = set(names) | set(optional)
        if self.archive:
            found = self._read_archive(wanted)
        else:
            found = {name: (self.path / name).read_bytes() for name in wanted if (self.path / name).is_file()}
        missing = [name for name in names if name not in found]
        if missing:
            raise DatasetNotFoundError(
                f"{self.dataset}: {', '.join(self.where(name) for name in missing)} missing; "
                f"{'the archive is incomplete' if self.archive else 'the folder is incomplete'}: put the "
                f"official {self.version.archive} (or all of its {self.version.folder}/ folder) in its place"
            )
        return found

    def _read_archive(self, wanted: set[str]) -> dict[str, bytes]:
        prefix = self.version.folder + "/"
        found: dict[str, bytes] = {}
        try:
            # One pass over the gzip stream; members are read, never extracted to disk.
            with tarfile.open(self.path, "r:gz") as archive:
                for member in archive:
                    name = member.name.removeprefix("./")
                    if not member.isfile() or not name.startswith(prefix) or name[len(prefix):] not in wanted:
                        continue
                    handle = archive.extractfile(member)
                    if handle is not None:
                        found[name[len(prefix):]] = handle.read()
                    if len(found) == len(wanted):
                        break
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise InvalidInputError(
                f"{self.dataset}: {str(self.path)!r} is not a readable .tar.gz archive "
                f"({_one_line(error)}); put the official {self.version.archive} in its place"
            ) from None
        return found


def _sources(dataset: str, split: str, root: Path) -> tuple[_Source | None, list[str]]:
    """The first version found (binary first; folders before archives), and the incomplete folders seen."""
    incomplete = []
    for version in _VERSIONS[dataset]:
        # root may be the extracted folder itself; else the folder or the archive in root or root/<dataset>.
        candidates = [(root, False)] if root.name == version.folder else []
        for base in (root, root / dataset):
            candidates += [(base / version.folder, False), (base / version.archive, True)]
        for path, archive in candidates:
            if archive and path.is_file():
                return _Source(dataset, version, path, archive=True), incomplete
            if not archive and path.is_dir():
                lacking = [name for name in version.files[split] if not (path / name).is_file()]
                if not lacking:
                    return _Source(dataset, version, path, archive=False), incomplete
                incomplete.append(f"{str(path)!r} lacks {', '.join(lacking)}")
    return None, incomplete


def _missing_message(dataset: str, split: str, root: Path, incomplete: list[str]) -> str:
    """Say exactly which archive or folder to put where, in one line."""
    binary, python = _VERSIONS[dataset]
    lines = [
        f"{dataset} ({split} split): found none of {binary.archive}, {binary.folder}/, {python.archive} or "
        f"{python.folder}/ in {str(root)!r} (or {str(root / dataset)!r}).",
        f"Put the official archive {binary.archive} (or {python.archive}) there as downloaded, or its extracted "
        f"folder, or point the environment variable SHIELDKIT_DATA (or root=) at the folder that holds it; "
        f"shieldkit does not download {dataset}.",
    ]
    if incomplete:
        lines.append("Incomplete: " + "; ".join(incomplete) + ".")
    return " ".join(lines)


def _load(dataset: str, split: str, root, label: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Pixels ``[N, 3072]`` uint8, labels ``[N]`` and class names of one split."""
    folder_root = data_root(root)
    source, incomplete = _sources(dataset, split, folder_root)
    if source is None:
        raise DatasetNotFoundError(_missing_message(dataset, split, folder_root, incomplete))
    version = source.version
    batches = version.files[split]
    meta = (version.meta, _COARSE_NAMES_FILE) if dataset == "cifar100" and version.kind == "binary" else (version.meta,)
    payloads = source.read(batches, optional=meta)
    read = _binary_batch if version.kind == "binary" else _python_batch
    parts = [read(dataset, source.where(name), payloads[name], label) for name in batches]
    pixels = torch.cat([p for p, _ in parts]) if len(parts) > 1 else parts[0][0]
    labels = torch.cat([y for _, y in parts]) if len(parts) > 1 else parts[0][1]
    classes = _class_names(dataset, source, payloads, label)
    if labels.numel() and int(labels.max()) >= len(classes):
        raise InvalidInputError(f"{dataset}: label {int(labels.max())} found in the {split} split of "
                                f"{str(source.path)!r}, but {dataset} has {len(classes)} "
                                f"{label + ' ' if dataset == 'cifar100' else ''}classes")
    return pixels, labels, classes


# ------------------------------------------------------------------ binary batches


def _binary_batch(dataset: str, where: str, payload: bytes, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Records of label byte(s) and 3,072 pixel bytes -> (pixels ``[N, 3072]`` uint8, labels ``[N]`` int64)."""
    label_bytes = 2 if dataset == "cifar100" else 1
    record = label_bytes + PIXELS
    if not payload or len(payload) % record:
        raise InvalidInputError(f"{dataset}: {where} is not a CIFAR binary batch: {len(payload)} bytes is not "
                                f"a whole number of {record}-byte records")
    records = torch.frombuffer(bytearray(payload), dtype=torch.uint8).view(-1, record)
    column = 1 if (dataset == "cifar100" and label == "fine") else 0  # CIFAR-100: coarse byte, then fine byte
    return records[:, label_bytes:], records[:, column].to(torch.int64)


def _text_names(payload: bytes) -> list[str]:
    return [line.strip() for line in payload.decode("utf-8", "replace").splitlines() if line.strip()]


# ------------------------------------------------------------------ python batches


def _numpy_constructors() -> dict[tuple[str, str], Callable[..., Any]]:
    """Exactly what the official python batches need to build their arrays (and ``_frombuffer``, which
    pickle protocol 5 uses for a batch saved again by a recent NumPy), under both NumPy module names."""
    import numpy as np

    def module(*names: str):
        for name in names:
            try:
                return importlib.import_module(name)
            except ImportError:
                continue
        return None

    multiarray = module("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = module("numpy._core.numeric", "numpy.core.numeric")

    def dtype(spec, align=False, copy=False):
        made = np.dtype(spec, align, copy)
        if made.hasobject:
            raise _Refused("numpy.dtype('O') (an array of Python objects)")
        return made

    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy._core", "numpy.core"):
        if multiarray is not None:
            allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if numeric is not None and hasattr(numeric, "_frombuffer"):
            allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as pickle protocol 2 uses it for bytes (``encode(str, "latin1")``), and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1") or errors != "strict":
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


class _Refused(Exception):
    """A python batch asked for a name outside the allowed ones; carries the name."""


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds NumPy arrays and refuses every other global (nothing the file names runs)."""

    def __init__(self, payload: bytes):
        super().__init__(io.BytesIO(payload), encoding="bytes")
        self._allowed = _numpy_constructors()

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found

    def persistent_load(self, pid):
        raise _Refused(f"a persistent id {pid!r}")


def _unpickle(dataset: str, where: str, payload: bytes) -> Any:
    try:
        return _BatchUnpickler(payload).load()
    except _Refused as refused:
        raise InvalidInputError(f"{dataset}: {where} is not a CIFAR batch: it asks to run {refused.args[0]}, "
                                "which shieldkit never executes") from None
    except Exception as error:  # noqa: BLE001 - any malformed pickle is one line naming the file
        raise InvalidInputError(f"{dataset}: {where} is not a CIFAR batch: cannot unpickle it "
                                f"({type(error).__name__}: {_one_line(error)})") from None


def _field(mapping: dict, key: str):
    """``mapping[b"key"]`` (Python 2 pickles read with ``encoding="bytes"``), else ``mapping["key"]``."""
    if key.encode() in mapping:
        return mapping[key.encode()]
    return mapping.get(key)


def _python_batch(dataset: str, where: str, payload: bytes, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A pickled batch dict -> (pixels ``[N, 3072]`` uint8, labels ``[N]`` int64)."""
    import numpy as np

    batch = _unpickle(dataset, where, payload)
    key = "labels" if dataset == "cifar10" else f"{label}_labels"
    if not isinstance(batch, dict):
        raise InvalidInputError(f"{dataset}: {where} is not a CIFAR batch: it holds a {type(batch).__name__}, "
                                "not a dict")
    data, labels = _field(batch, "data"), _field(batch, key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        shown = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise InvalidInputError(f"{dataset}: {where} is not a CIFAR batch: its b'data' must be a uint8 array "
                                f"[N, {PIXELS}], got {shown}")
    try:
        y = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)
    except (TypeError, ValueError):
        y = None
    if y is None or labels is None or y.shape[0] != data.shape[0] or (y.numel() and int(y.min()) < 0):
        raise InvalidInputError(f"{dataset}: {where} is not a CIFAR batch: its b'{key}' must be {data.shape[0]} "
                                f"labels >= 0, got {type(labels).__name__}")
    return torch.from_numpy(np.ascontiguousarray(data)), y


# ------------------------------------------------------------------ class names


def _class_names(dataset: str, source: _Source, payloads: dict[str, bytes], label: str) -> tuple[str, ...]:
    """The names in the version's meta file; the published ones when the file is absent."""
    builtin = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_FINE_CLASSES}[dataset]
    if dataset == "cifar100" and label == "coarse":
        builtin = CIFAR100_COARSE_CLASSES
    version = source.version
    if version.kind == "binary":
        meta = _COARSE_NAMES_FILE if label == "coarse" else version.meta
        if meta not in payloads:
            return builtin
        names = _text_names(payloads[meta])
        where = source.where(meta)
    else:
        if version.meta not in payloads:
            return builtin
        where = source.where(version.meta)
        content = _unpickle(dataset, where, payloads[version.meta])
        key = "label_names" if dataset == "cifar10" else f"{label}_label_names"
        raw = _field(content, key) if isinstance(content, dict) else None
        if not isinstance(raw, (list, tuple)):
            raise InvalidInputError(f"{dataset}: {where} is not CIFAR metadata: no list b'{key}'")
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in raw]
    if len(names) != len(builtin):
        raise InvalidInputError(f"{dataset}: {where} names {len(names)} classes, expected {len(builtin)}")
    return tuple(names)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
