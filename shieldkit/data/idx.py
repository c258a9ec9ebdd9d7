"""Reading the IDX files of MNIST and Fashion-MNIST, with checksums, caching and download.

The IDX format (big-endian): images start with the uint32 header
``magic=2051, count, rows, cols`` followed by ``count*rows*cols`` unsigned bytes;
labels start with ``magic=2049, count`` followed by ``count`` unsigned bytes.
Files are read in their original gzip-compressed form and checked against the
MD5 sums their publishers give, so a truncated or altered copy never trains a model.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import tempfile
import threading
import urllib.request
from pathlib import Path

import torch

from shieldkit.core.errors import DatasetNotFoundError

logger = logging.getLogger(__name__)

__all__ = [
    "DATASET_FOLDERS",
    "DatasetNotFoundError",
    "IDX_FILES",
    "MD5_SUMS",
    "MIRRORS",
    "data_root",
    "load_idx_split",
    "read_idx",
]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
DOWNLOAD_TIMEOUT_S = 15.0

#: The (images, labels) file names of each split; identical for MNIST and Fashion-MNIST.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: The sub-folder of the data root that holds each dataset's files.
DATASET_FOLDERS: dict[str, str] = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}

#: Published MD5 sums of the gzip-compressed files.
MD5_SUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

#: Public mirrors tried in order by ``download=True``; the file name is appended.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
}

# Parsed files keyed by (path, mtime, size): a second load in the same process is a
# dictionary look-up, and a file replaced on disk is read (and checked) again.
_PARSED: dict[tuple[str, int, int], torch.Tensor] = {}
_PARSED_LOCK = threading.Lock()


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds the datasets.

    Args:
        root: an explicit folder; when ``None`` the environment variable
            ``SHIELDKIT_DATA`` is used, else ``~/.cache/shieldkit/data``.

    Returns:
        The folder as a ``Path`` (it need not exist).
    """
    if root is not None:
        return Path(root).expanduser()
    from_env = os.environ.get("SHIELDKIT_DATA")
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "shieldkit" / "data"


def md5_of_bytes(payload: bytes) -> str:
    """The hexadecimal MD5 sum of ``payload`` (used as a checksum, not for security)."""
    return hashlib.md5(payload, usedforsecurity=False).hexdigest()


def read_idx(path: str | os.PathLike, expected_md5: str | None = None) -> torch.Tensor:
    """Read one (optionally gzip-compressed) IDX file into a uint8 tensor.

    Args:
        path: the ``.gz`` (or uncompressed) IDX file.
        expected_md5: the MD5 sum the file on disk must have; ``None`` skips the check.

    Returns:
        The parsed tensor, shared with an in-process cache: callers must not
        modify it in place (convert it, which copies, instead).

    Shape:
        images: ``[count, rows, cols]``; labels: ``[count]``. dtype ``uint8``.

    Raises:
        ValueError: the MD5 sum differs from ``expected_md5`` or the file is not valid IDX.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _PARSED_LOCK:
        cached = _PARSED.get(key)
    if cached is not None:
        return cached

    raw = path.read_bytes()
    if expected_md5 is not None:
        found_md5 = md5_of_bytes(raw)
        if found_md5 != expected_md5:
            raise ValueError(
                f"dataset file {str(path)!r} is corrupt: expected MD5 {expected_md5}, "
                f"found {found_md5}. Delete it and put a fresh copy in its place "
                f"(or pass download=True to fetch it again)."
            )
    payload = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    tensor = _parse_idx(payload, path)
    with _PARSED_LOCK:
        _PARSED[key] = tensor
    logger.debug("read %s: shape %s", path, tuple(tensor.shape))
    return tensor


def _parse_idx(payload: bytes, path: Path) -> torch.Tensor:
    """Parse the uncompressed bytes of an IDX images or labels file."""
    if len(payload) < 8:
        raise ValueError(f"{str(path)!r} is not an IDX file: only {len(payload)} bytes")
    magic, count = struct.unpack(">II", payload[:8])
    if magic == IMAGES_MAGIC:
        if len(payload) < 16:
            raise ValueError(f"{str(path)!r}: IDX images header is truncated")
        rows, cols = struct.unpack(">II", payload[8:16])
        shape, offset = (count, rows, cols), 16
    elif magic == LABELS_MAGIC:
        shape, offset = (count,), 8
    else:
        raise ValueError(
            f"{str(path)!r} is not an IDX images or labels file: magic number {magic}, "
            f"expected {IMAGES_MAGIC} (images) or {LABELS_MAGIC} (labels)"
        )
    expected_bytes = offset + int(torch.Size(shape).numel())
    if len(payload) != expected_bytes:
        raise ValueError(
            f"{str(path)!r}: the header promises shape {shape} ({expected_bytes} bytes) "
            f"but the file has {len(payload)} bytes"
        )
    # bytearray gives torch a writable buffer it can own without a warning.
    return torch.frombuffer(bytearray(payload[offset:]), dtype=torch.uint8).reshape(shape)


def _locate(root: Path, folder: str, filename: str) -> Path | None:
    """The file in ``<root>/<folder>/`` or directly in ``<root>/``, else ``None``."""
    for candidate in (root / folder / filename, root / filename):
        if candidate.is_file():
            return candidate
    return None


def _download(dataset: str, filename: str, target_dir: Path) -> Path:
    """Fetch one file from the first mirror that serves it with the right MD5 sum."""
    expected_md5 = MD5_SUMS[dataset][filename]
    target_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in MIRRORS[dataset]:
        url = mirror + filename
        try:
            logger.info("downloading %s", url)
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                payload = response.read()
        except Exception as error:  # any network failure just moves on to the next mirror
            failures.append(f"{url}: {error}")
            continue
        found_md5 = md5_of_bytes(payload)
        if found_md5 != expected_md5:
            failures.append(f"{url}: MD5 {found_md5}, expected {expected_md5}")
            continue
        # Write beside the target and rename, so an interrupted download never
        # leaves a partial file that looks like the real one.
        with tempfile.NamedTemporaryFile(dir=target_dir, suffix=".part", delete=False) as tmp:
            tmp.write(payload)
        target = target_dir / filename
        os.replace(tmp.name, target)
        return target
    raise OSError("; ".join(failures) or "no mirror configured")


def load_idx_split(
    dataset: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find, check and read the images and labels of one split of an IDX dataset.

    Args:
        dataset: ``"mnist"`` or ``"fashion_mnist"``.
        split: ``"train"`` or ``"test"``.
        root: the data folder (see :func:`data_root`).
        download: fetch missing files from the public mirrors (checked by MD5).

    Returns:
        ``(images, labels)``, both uint8 and shared with the in-process cache.

    Shape:
        images ``[N, 28, 28]``, labels ``[N]``.

    Raises:
        DatasetNotFoundError: files are missing (and could not be downloaded).
        ValueError: a bad ``dataset``/``split``, a corrupt file, or images and
            labels of different lengths.
    """
    if dataset not in MD5_SUMS:
        raise ValueError(f"dataset must be one of {sorted(MD5_SUMS)}, got {dataset!r}")
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder_root = data_root(root)
    folder = DATASET_FOLDERS[dataset]
    filenames = IDX_FILES[split]

    paths = {name: _locate(folder_root, folder, name) for name in filenames}
    missing = [name for name, path in paths.items() if path is None]
    download_errors = []
    if missing and download:
        for name in missing:
            try:
                paths[name] = _download(dataset, name, folder_root / folder)
            except OSError as error:
                download_errors.append(f"{name}: {error}")
        missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise DatasetNotFoundError(
            _missing_message(dataset, split, folder_root / folder, missing, download_errors)
        )

    images_path, labels_path = (paths[name] for name in filenames)
    images = read_idx(images_path, MD5_SUMS[dataset][filenames[0]])
    labels = read_idx(labels_path, MD5_SUMS[dataset][filenames[1]])
    if images.dim() != 3 or labels.dim() != 1:
        raise ValueError(
            f"{dataset} {split}: expected an images file and a labels file, got shapes "
            f"{tuple(images.shape)} from {str(images_path)!r} and {tuple(labels.shape)} "
            f"from {str(labels_path)!r}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{dataset} {split}: {images.shape[0]} images in {str(images_path)!r} but "
            f"{labels.shape[0]} labels in {str(labels_path)!r}"
        )
    return images, labels


def _missing_message(
    dataset: str, split: str, folder: Path, missing: list[str], download_errors: list[str]
) -> str:
    """Say exactly which files to put where, and the two other ways out."""
    lines = [
        f"{dataset} ({split} split): missing file(s) {', '.join(missing)}.",
        f"Put them in {str(folder)!r} (or directly in {str(folder.parent)!r}), "
        "or point the environment variable SHIELDKIT_DATA (or root=) at the folder that "
        f"holds a '{folder.name}/' sub-folder, or pass download=True to fetch them "
        "from the public mirrors.",
    ]
    if download_errors:
        lines.append("Download failed: " + " | ".join(download_errors))
    return " ".join(lines)
