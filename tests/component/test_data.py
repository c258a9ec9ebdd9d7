"""Datasets: the real MNIST / Fashion-MNIST files, digits, folders, and ImageData."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
import torch
from support.needs import need

from shieldkit.data import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    DatasetNotFoundError,
    ImageData,
    data_root,
    digits,
    fashion_mnist,
    image_folder,
    load,
    mnist,
)
from shieldkit.data.idx import IDX_FILES, MD5_SUMS, read_idx

# The real files; tests and CI point SHIELDKIT_DATA at the folder holding mnist/ and fashion-mnist/.
DATA_ROOT = data_root()


# -- MNIST and Fashion-MNIST -------------------------------------------------------


@pytest.mark.parametrize("loader", [mnist, fashion_mnist])
@pytest.mark.parametrize(("split", "count"), [("train", 60000), ("test", 10000)])
def test_idx_datasets_have_the_published_shapes_and_ranges(loader, split, count):
    data = loader(split)
    assert len(data) == count
    assert data.x.shape == (count, 1, 28, 28)
    assert data.x.dtype == torch.float32
    assert data.y.shape == (count,)
    assert data.y.dtype == torch.int64
    assert 0.0 <= data.x.min().item() and data.x.max().item() == 1.0
    assert set(data.y.unique().tolist()) == set(range(10))
    assert data.num_classes == 10 and data.shape == (1, 28, 28)
    assert data.split == split and data.name == loader.__name__


def test_class_names_and_balance():
    assert mnist().classes == tuple(str(d) for d in range(10))
    fashion = fashion_mnist("test")
    assert fashion.classes == FASHION_MNIST_CLASSES
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[9] == "Ankle boot"
    # Fashion-MNIST's test split has exactly 1,000 images per class.
    assert fashion.y.bincount().tolist() == [1000] * 10


def test_second_load_is_served_from_the_cache_and_independent():
    first = mnist("test")
    first.x.zero_()  # must not leak into later loads through the cache
    second = mnist("test")
    assert second.x.max().item() == 1.0


def test_files_directly_in_root_are_found(tmp_path):
    for name in IDX_FILES["test"]:
        shutil.copy(DATA_ROOT / "mnist" / name, tmp_path / name)
    assert len(mnist("test", root=tmp_path)) == 10000


def test_environment_variable_and_root_argument(monkeypatch, tmp_path):
    monkeypatch.setenv("SHIELDKIT_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root(DATA_ROOT) == DATA_ROOT
    monkeypatch.delenv("SHIELDKIT_DATA")
    assert data_root() == Path.home() / ".cache" / "shieldkit" / "data"


def test_corrupt_file_names_the_file_and_both_checksums(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    folder = tmp_path / "mnist"
    folder.mkdir()
    shutil.copy(DATA_ROOT / "mnist" / "t10k-images-idx3-ubyte.gz", folder)
    payload = bytearray((DATA_ROOT / "mnist" / name).read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    (folder / name).write_bytes(bytes(payload))
    with pytest.raises(ValueError) as caught:
        mnist("test", root=tmp_path)
    message = str(caught.value)
    assert name in message
    assert MD5_SUMS["mnist"][name] in message
    assert "found" in message


def test_missing_files_message_names_files_folder_and_remedies(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        fashion_mnist("train", root=tmp_path)
    assert isinstance(caught.value, FileNotFoundError)
    message = str(caught.value)
    for name in IDX_FILES["train"]:
        assert name in message
    assert str(tmp_path / "fashion-mnist") in message
    assert "SHIELDKIT_DATA" in message and "download=True" in message


@pytest.mark.parametrize("loader", [mnist, fashion_mnist])
def test_bad_split_is_rejected(loader, tmp_path):
    with pytest.raises(ValueError, match="split must be 'train' or 'test'.*'validation'"):
        loader("validation", root=tmp_path)


def test_read_idx_rejects_a_file_that_is_not_idx(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"\x00\x00\x00\x07" + bytes(12))
    with pytest.raises(ValueError, match="magic number 7"):
        read_idx(path)


def test_read_idx_rejects_a_truncated_file(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes((2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes(3))
    with pytest.raises(ValueError, match="promises shape"):
        read_idx(path)


# -- digits ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 28])
def test_digits_shapes_and_split_sizes(size):
    train, test = digits("train", size=size), digits("test", size=size)
    assert (len(train), len(test)) == (1437, 360)
    assert train.x.shape == (1437, 1, size, size) and test.x.shape == (360, 1, size, size)
    for part in (train, test):
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert 0.0 <= part.x.min().item() and part.x.max().item() <= 1.0
        assert set(part.y.unique().tolist()) == set(range(10))
    assert digits("test", size=8).x.max().item() == 1.0  # 16/16 at native size


def test_digits_split_is_deterministic_and_disjoint():
    assert torch.equal(digits("test", size=8).x, digits("test", size=8).x)
    train = {tuple(row.tolist()) for row in digits("train", size=8).x.flatten(1)}
    test = [tuple(row.tolist()) for row in digits("test", size=8).x.flatten(1)]
    # A few digits are pixel-identical duplicates in the source; nearly all test images are new.
    assert sum(row in train for row in test) < 10


def test_digits_validates_arguments():
    with pytest.raises(ValueError, match="split"):
        digits("val")
    with pytest.raises(ValueError, match="size"):
        digits(size=0)


def _digits_from_scikit_learn(split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: the split and resize written out from scikit-learn's own loader (what digits() did before
    the data shipped inside shieldkit)."""
    load_digits = need("sklearn.datasets", "pip install scikit-learn (in shieldkit[dev])").load_digits
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    part = order[:1437] if split == "train" else order[1437:]
    x, y = x[part], y[part]
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("size", [8, 28])
def test_packaged_digits_equal_scikit_learns_bit_for_bit(split, size):
    expected_x, expected_y = _digits_from_scikit_learn(split, size)
    data = digits(split, size=size)
    assert data.x.dtype == expected_x.dtype and data.y.dtype == expected_y.dtype
    assert torch.equal(data.x, expected_x) and torch.equal(data.y, expected_y)


def test_packaged_digits_file_holds_plain_arrays_and_is_what_the_generator_writes(tmp_path):
    import numpy as np

    from shieldkit.data import _make_digits

    packaged = Path(_make_digits.__file__).with_name("digits.npz")
    # allow_pickle=False: loading fails on any object array, so the file cannot carry code.
    with np.load(packaged, allow_pickle=False) as archive:
        stored = {name: archive[name] for name in archive.files}
    assert sorted(stored) == ["images", "labels"]
    assert stored["images"].dtype == np.uint8 and stored["images"].shape == (1797, 8, 8)
    assert stored["labels"].dtype == np.uint8 and stored["labels"].shape == (1797,)
    assert packaged.stat().st_size < 120_000
    need("sklearn", "pip install scikit-learn (in shieldkit[dev])")
    fresh = _make_digits.digits_arrays()
    for name, array in fresh.items():
        assert np.array_equal(stored[name], array), name
    # The generator is reproducible: two writes of the same data give the same bytes.
    _make_digits.write_npz(tmp_path / "a.npz", fresh)
    _make_digits.write_npz(tmp_path / "b.npz", fresh)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_digits_load_without_scikit_learn(monkeypatch):
    import sys

    digits_module = importlib.import_module("shieldkit.data.digits")  # the package exports the function by that name
    monkeypatch.setitem(sys.modules, "sklearn", None)  # any import of scikit-learn now raises ImportError
    digits_module._native_digits.cache_clear()
    try:
        data = digits("test", size=8)
    finally:
        digits_module._native_digits.cache_clear()
    assert len(data) == 360 and data.x.max().item() == 1.0


def test_a_damaged_packaged_file_is_a_one_line_error_saying_to_reinstall(monkeypatch):
    from shieldkit.core.errors import ShieldkitError

    digits_module = importlib.import_module("shieldkit.data.digits")

    monkeypatch.setattr(digits_module, "_DATA_FILE", "no-such-digits.npz")
    digits_module._native_digits.cache_clear()
    try:
        with pytest.raises(ShieldkitError, match="no-such-digits.npz.*reinstall shieldkit") as caught:
            digits("test")
    finally:
        digits_module._native_digits.cache_clear()
    assert "\n" not in str(caught.value)


# -- image_folder ------------------------------------------------------------------


def test_image_folder_reads_class_subfolders(tmp_path):
    image_module = need("PIL.Image", "pip install pillow (shieldkit[report] brings it with matplotlib)")
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / "test" / name).mkdir(parents=True)
        for index in range(3):
            pixels = bytes([label * 200 + index] * 100)
            image_module.frombytes("L", (10, 10), pixels).save(
                tmp_path / "test" / name / f"{index}.png"
            )
    data = image_folder("test", root=tmp_path, size=12)
    assert data.classes == ("cat", "dog")
    assert data.x.shape == (6, 1, 12, 12)
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.x[3].max().item() == pytest.approx(200 / 255)


def test_image_folder_requires_root():
    with pytest.raises(ValueError, match="root is required"):
        image_folder()


# -- ImageData ---------------------------------------------------------------------


def _toy(n: int = 10) -> ImageData:
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 3
    return ImageData(x, y, classes=("a", "b", "c"), name="toy", split="test")


def test_image_data_indexing_and_slicing():
    data = _toy()
    image, label = data[4]
    assert image.shape == (1, 4, 4) and label.item() == 1
    part = data[2:5]
    assert isinstance(part, ImageData) and len(part) == 3
    assert part.classes == data.classes and part.name == "toy" and part.split == "test"
    assert data[[0, 9]].y.tolist() == [0, 0]
    assert len(data.head(3)) == 3 and torch.equal(data.head(3).x, data.x[:3])


def test_image_data_subset_is_deterministic():
    data = _toy(50)
    first, again = data.subset(20, seed=3), data.subset(20, seed=3)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert not torch.equal(first.x, data.subset(20, seed=4).x)
    assert torch.equal(data.subset(5, seed=3).x, first.x[:5])
    assert len({tuple(row.tolist()) for row in first.x.flatten(1)}) == 20  # no repeats


@pytest.mark.parametrize("n", [0, 11, -1])
def test_image_data_subset_and_head_reject_bad_sizes(n):
    data = _toy()
    with pytest.raises(ValueError, match=f"n={n}"):
        data.subset(n)
    with pytest.raises(ValueError, match=f"n={n}"):
        data.head(n)


def test_image_data_batches_cover_everything_once():
    data = _toy(10)
    plain = list(data.batches(4))
    assert [len(y) for _, y in plain] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in plain]), data.x)
    shuffled = list(data.batches(4, shuffle=True, seed=1))
    order = torch.cat([y for _, y in shuffled])
    assert sorted(order.tolist()) == sorted(data.y.tolist())
    assert [y.tolist() for _, y in shuffled] == [
        y.tolist() for _, y in data.batches(4, shuffle=True, seed=1)
    ]
    with pytest.raises(ValueError, match="batch_size"):
        next(data.batches(0))


def test_image_data_to_and_properties():
    data = _toy()
    assert data.to("cpu") is data
    assert data.num_classes == 3 and data.shape == (1, 4, 4)
    assert "toy" in repr(data)


def test_image_data_default_class_names():
    data = ImageData(torch.zeros(3, 1, 2, 2), torch.tensor([0, 4, 1]))
    assert data.classes == ("0", "1", "2", "3", "4")


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (
            torch.zeros(3, 4, 4),
            torch.zeros(3, dtype=torch.long),
            r"x must have shape \[N, C, H, W\]",
        ),
        (
            torch.zeros(3, 1, 4, 4, dtype=torch.uint8),
            torch.zeros(3, dtype=torch.long),
            "float tensor",
        ),
        (torch.full((3, 1, 4, 4), 2.0), torch.zeros(3, dtype=torch.long), r"must lie in \[0, 1\]"),
        (
            torch.full((3, 1, 4, 4), float("nan")),
            torch.zeros(3, dtype=torch.long),
            r"must lie in \[0, 1\]",
        ),
        (torch.zeros(3, 1, 4, 4), torch.zeros(2, dtype=torch.long), "3 images but y has 2 labels"),
        (torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, dtype=torch.long), r"y must have shape \[N\]"),
        (torch.zeros(3, 1, 4, 4), torch.zeros(3), "integer labels"),
        (torch.zeros(3, 1, 4, 4), torch.tensor([0, -1, 0]), ">= 0"),
    ],
)
def test_image_data_validates_its_tensors(x, y, message):
    with pytest.raises(ValueError, match=message):
        ImageData(x, y)


def test_image_data_rejects_more_labels_than_classes():
    with pytest.raises(ValueError, match="label 5 .* only 2 class names"):
        ImageData(torch.zeros(2, 1, 2, 2), torch.tensor([0, 5]), classes=("a", "b"))


def test_image_data_rejects_non_tensors():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ImageData([[0.0]], torch.zeros(1, dtype=torch.long))


# -- the DATASETS list and load() through the registry -------------------------------


def test_datasets_lists_every_loader_with_a_summary_and_defaults():
    assert {loader.__name__ for loader in DATASETS} >= {"digits", "mnist", "fashion_mnist"}
    for loader in DATASETS:
        assert loader.__doc__ and loader.__doc__.strip().splitlines()[0]
        import inspect

        params = inspect.signature(loader).parameters
        assert params["split"].default == "test" and params["root"].default is None


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "fashion_mnist"])
def test_load_by_name_through_the_registry(name):
    data = load(name, split="test")
    assert len(data) == 10000 and data.name == name.replace("-", "_")


def test_load_digits_through_the_registry_passes_options():
    data = load("digits", split="train", size=8)
    assert data.x.shape == (1437, 1, 8, 8)


def test_load_passes_root_and_download_to_the_loader(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        load("mnist", split="test", root=tmp_path, download=False)
