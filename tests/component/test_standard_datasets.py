"""CIFAR-10, CIFAR-100 and ImageNet: archives and folders written here in the official byte layouts,
read back exactly; the restricted unpickler; the named normalisations; the registry and the command line."""

from __future__ import annotations

import os
import pickle
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support.needs import need
from torch import nn

from shieldkit.cli import main
from shieldkit.core.errors import DatasetNotFoundError, InvalidInputError, InvalidParameterError
from shieldkit.core.layers import Normalize
from shieldkit.data import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    DATASETS,
    NORMALIZATIONS,
    ImageData,
    ImageFolderDataset,
    StreamedData,
    cifar10,
    cifar100,
    imagenet,
    load,
    named_normalization,
)
from shieldkit.evaluation.config import parse_normalize
from shieldkit.evaluation.results import read_rows
from shieldkit.plugins.registry import create_dataset, list_datasets

PIXELS = 3072
# Records per batch file: five train batches of CIFAR-10 make 5 x 7 = 35 train images.
TRAIN_PER_BATCH, TEST_COUNT = 7, 23


# ------------------------------------------------------------------ writing the official layouts


def _split(dataset: str, split: str, seed: int) -> dict[str, np.ndarray]:
    """Random pixels [N, 3072] uint8 and labels of one split (CIFAR-10: 5 train batches, flattened)."""
    rng = np.random.default_rng(seed)
    n = (5 * TRAIN_PER_BATCH if dataset == "cifar10" else 3 * TRAIN_PER_BATCH) if split == "train" else TEST_COUNT
    if dataset == "cifar10":
        return {"data": rng.integers(0, 256, (n, PIXELS), dtype=np.uint8), "labels": rng.integers(0, 10, n)}
    fine = rng.integers(0, 100, n)
    return {"data": rng.integers(0, 256, (n, PIXELS), dtype=np.uint8), "fine": fine, "coarse": fine // 5}


def _names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}_{index:03d}" for index in range(count)]  # not the published names: read from the meta


def _write_cifar(folder: Path, dataset: str, version: str, meta: bool = True, protocol: int = 2) -> dict:
    """The extracted folder of one official version, with random content; returns what was written."""
    written = {"train": _split(dataset, "train", 1), "test": _split(dataset, "test", 2)}
    folder.mkdir(parents=True)
    if dataset == "cifar10":
        batches = {f"data_batch_{i}": slice((i - 1) * TRAIN_PER_BATCH, i * TRAIN_PER_BATCH) for i in range(1, 6)}
        parts = [("train", name, rows) for name, rows in batches.items()] + [("test", "test_batch", slice(None))]
    else:
        parts = [("train", "train", slice(None)), ("test", "test", slice(None))]
    for split, name, rows in parts:
        data = written[split]["data"][rows]
        if version == "binary":
            if dataset == "cifar10":
                labels = written[split]["labels"][rows].astype(np.uint8)[:, None]
            else:  # coarse byte, then fine byte
                labels = np.stack([written[split]["coarse"], written[split]["fine"]], 1).astype(np.uint8)
            (folder / f"{name}.bin").write_bytes(np.concatenate([labels, data], 1).tobytes())
        else:
            content = {b"batch_label": b"batch", b"data": data, b"filenames": [b"x.png"] * len(data)}
            if dataset == "cifar10":
                content[b"labels"] = [int(v) for v in written[split]["labels"][rows]]
            else:
                content[b"fine_labels"] = [int(v) for v in written[split]["fine"]]
                content[b"coarse_labels"] = [int(v) for v in written[split]["coarse"]]
            with open(folder / name, "wb") as handle:
                pickle.dump(content, handle, protocol=protocol)
    if meta:
        if dataset == "cifar10" and version == "binary":
            (folder / "batches.meta.txt").write_text("\n".join(_names("c10", 10)) + "\n\n")
        elif dataset == "cifar10":
            with open(folder / "batches.meta", "wb") as handle:
                pickle.dump({b"label_names": [n.encode() for n in _names("c10", 10)], b"num_vis": PIXELS}, handle,
                            protocol=protocol)
        elif version == "binary":
            (folder / "fine_label_names.txt").write_text("\n".join(_names("fine", 100)) + "\n")
            (folder / "coarse_label_names.txt").write_text("\n".join(_names("coarse", 20)) + "\n")
        else:
            with open(folder / "meta", "wb") as handle:
                pickle.dump({b"fine_label_names": [n.encode() for n in _names("fine", 100)],
                             b"coarse_label_names": [n.encode() for n in _names("coarse", 20)]}, handle,
                            protocol=protocol)
    return written


FOLDERS = {("cifar10", "binary"): ("cifar-10-batches-bin", "cifar-10-binary.tar.gz"),
           ("cifar10", "python"): ("cifar-10-batches-py", "cifar-10-python.tar.gz"),
           ("cifar100", "binary"): ("cifar-100-binary", "cifar-100-binary.tar.gz"),
           ("cifar100", "python"): ("cifar-100-python", "cifar-100-python.tar.gz")}


def _archive(root: Path, folder: Path, name: str) -> Path:
    """``folder`` packed as the official ``.tar.gz`` in ``root`` (members ``<folder>/<file>``), folder removed."""
    path = root / name
    with tarfile.open(path, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()
    return path


def _make(root: Path, dataset: str, version: str, form: str, **options) -> dict:
    folder_name, archive_name = FOLDERS[(dataset, version)]
    written = _write_cifar(root / folder_name, dataset, version, **options)
    if form == "archive":
        _archive(root, root / folder_name, archive_name)
    return written


def _expected_x(pixels: np.ndarray) -> torch.Tensor:
    """Pixel k of a record, channel-major (1,024 red, then green, then blue, row by row), over 255."""
    n = pixels.shape[0]
    x = torch.empty(n, 3, 32, 32)
    flat = torch.from_numpy(pixels.astype(np.float32))
    for channel in range(3):
        for row in range(32):
            start = channel * 1024 + row * 32
            x[:, channel, row, :] = flat[:, start:start + 32] / 255
    return x


# ------------------------------------------------------------------ CIFAR read back exactly


@pytest.mark.parametrize("form", ["folder", "archive"])
@pytest.mark.parametrize("version", ["binary", "python"])
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_reads_every_official_form_exactly(tmp_path, dataset, version, form):
    written = _make(tmp_path, dataset, version, form)
    loader = cifar10 if dataset == "cifar10" else cifar100
    for split in ("train", "test"):
        data = loader(split, root=tmp_path)
        expected = written[split]
        assert isinstance(data, ImageData) and data.name == dataset and data.split == split
        assert data.x.shape == (len(expected["data"]), 3, 32, 32) and data.x.dtype == torch.float32
        assert data.y.dtype == torch.int64
        assert torch.equal(data.x, _expected_x(expected["data"]))
        # One pixel by hand: record 3, green (channel 1), row 5, column 7 is byte 1024 + 5 * 32 + 7.
        assert data.x[3, 1, 5, 7].item() == expected["data"][3, 1024 + 5 * 32 + 7] / np.float32(255)
        labels = expected["labels"] if dataset == "cifar10" else expected["fine"]
        assert data.y.tolist() == labels.tolist()
    if dataset == "cifar10":
        assert data.classes == tuple(_names("c10", 10))
    else:
        assert data.classes == tuple(_names("fine", 100))
        coarse = cifar100("test", root=tmp_path, label="coarse")
        assert coarse.y.tolist() == written["test"]["coarse"].tolist()
        assert coarse.classes == tuple(_names("coarse", 20)) and coarse.name == "cifar100-coarse"
        assert torch.equal(coarse.x, data.x)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python_batches_pickled_with_any_protocol_are_read(tmp_path, protocol):
    written = _make(tmp_path, "cifar10", "python", "folder", protocol=protocol)
    data = cifar10("test", root=tmp_path)
    assert torch.equal(data.x, _expected_x(written["test"]["data"]))
    assert data.classes == tuple(_names("c10", 10))


@pytest.mark.parametrize(("dataset", "version"), [("cifar10", "binary"), ("cifar100", "python")])
def test_without_the_meta_file_the_published_names_are_used(tmp_path, dataset, version):
    _make(tmp_path, dataset, version, "folder", meta=False)
    if dataset == "cifar10":
        assert cifar10(root=tmp_path).classes == CIFAR10_CLASSES
    else:
        assert cifar100(root=tmp_path).classes == CIFAR100_FINE_CLASSES
        assert cifar100(root=tmp_path, label="coarse").classes == CIFAR100_COARSE_CLASSES
    assert CIFAR10_CLASSES[0] == "airplane" and CIFAR100_FINE_CLASSES[-1] == "worm"


def test_binary_is_preferred_and_a_dataset_subfolder_or_the_folder_itself_is_found(tmp_path):
    binary = _make(tmp_path / "cifar10", "cifar10", "binary", "archive")  # <root>/cifar10/cifar-10-binary.tar.gz
    python = _write_cifar(tmp_path / "cifar-10-batches-py", "cifar10", "python")
    # Both versions are there (python directly in root, binary in cifar10/): the binary one wins.
    data = cifar10("test", root=tmp_path)
    assert torch.equal(data.x, _expected_x(binary["test"]["data"]))
    # root may be the extracted folder itself.
    direct = cifar10("test", root=tmp_path / "cifar-10-batches-py")
    assert torch.equal(direct.x, _expected_x(python["test"]["data"]))


def test_the_environment_variable_is_the_default_root(tmp_path, monkeypatch):
    written = _make(tmp_path, "cifar100", "binary", "archive")
    monkeypatch.setenv("SHIELDKIT_DATA", str(tmp_path))
    assert cifar100().y.tolist() == written["test"]["fine"].tolist()


# ------------------------------------------------------------------ what is refused, in one line


class _RunsAShellCommand:
    """Unpickling this runs ``touch MARKER`` through ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("form", ["folder", "archive"])
@pytest.mark.parametrize("where", ["batch", "inside", "meta"])
def test_a_malicious_pickle_runs_nothing_and_is_refused_in_one_line(tmp_path, form, where):
    root = tmp_path / "data"
    _make(root, "cifar10", "python", "folder")
    marker = tmp_path / "pwned"
    folder = root / "cifar-10-batches-py"
    evil = _RunsAShellCommand(marker)
    if where == "batch":
        (folder / "test_batch").write_bytes(pickle.dumps(evil, protocol=2))
    elif where == "inside":  # the payload hidden in a well-formed batch
        (folder / "test_batch").write_bytes(pickle.dumps({b"data": evil, b"labels": [0]}))
    else:
        (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": evil}))
    if form == "archive":
        _archive(root, folder, "cifar-10-python.tar.gz")
    with pytest.raises(InvalidInputError) as refused:
        cifar10("test", root=root)
    message = str(refused.value)
    assert "\n" not in message
    assert "is not a CIFAR batch: it asks to run posix.system, which shieldkit never executes" in message
    assert message.startswith("cifar10: ") and ("test_batch" in message or "batches.meta" in message)
    assert not marker.exists()
    # The control: a plain unpickler would have run it.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_RunsAShellCommand(control)))
    assert control.exists()


def test_other_globals_and_object_arrays_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, "cifar10", "python")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((1, PIXELS), np.uint8),
                                                      b"labels": [0], b"extra": Path("x")}))
    with pytest.raises(InvalidInputError, match=r"asks to run pathlib\.PosixPath"):
        cifar10(root=tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.array([[1, "a"]], dtype=object),
                                                      b"labels": [0]}))
    with pytest.raises(InvalidInputError, match="asks to run"):
        cifar10(root=tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(InvalidInputError, match="cannot unpickle") as error:
        cifar10(root=tmp_path)
    assert "\n" not in str(error.value)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(InvalidInputError, match=r"uint8 array \[N, 3072\]"):
        cifar10(root=tmp_path)


def test_a_truncated_binary_batch_or_archive_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    _write_cifar(folder, "cifar10", "binary")
    (folder / "test_batch.bin").write_bytes((folder / "test_batch.bin").read_bytes()[:-5])
    with pytest.raises(InvalidInputError, match="not a whole number of 3073-byte records"):
        cifar10(root=tmp_path)
    other = tmp_path / "other"
    _make(other, "cifar100", "binary", "archive")
    archive = other / "cifar-100-binary.tar.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(InvalidInputError, match="not a readable .tar.gz archive") as error:
        cifar100(root=other)
    assert "\n" not in str(error.value)


def test_missing_files_say_what_to_put_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as missing:
        cifar10("test", root=tmp_path)
    message = str(missing.value)
    assert "\n" not in message and str(tmp_path) in message
    for name in ("cifar-10-binary.tar.gz", "cifar-10-python.tar.gz", "cifar-10-batches-bin/", "SHIELDKIT_DATA"):
        assert name in message
    with pytest.raises(DatasetNotFoundError, match="cifar-100-binary.tar.gz"):
        cifar100("train", root=tmp_path)
    # An incomplete extracted folder is named with what it lacks.
    folder = tmp_path / "cifar-10-batches-bin"
    _write_cifar(folder, "cifar10", "binary")
    (folder / "data_batch_3.bin").unlink()
    assert len(cifar10("test", root=tmp_path)) == TEST_COUNT
    with pytest.raises(DatasetNotFoundError, match="lacks data_batch_3.bin"):
        cifar10("train", root=tmp_path)
    with pytest.raises(InvalidParameterError, match="split='val'"):
        cifar10("val", root=tmp_path)
    with pytest.raises(InvalidParameterError, match="label='medium'"):
        cifar100(root=tmp_path, label="medium")


# ------------------------------------------------------------------ ImageNet, streamed


WNIDS = ("n01440764", "n01443537", "n02085620")
SIZES = ((300, 260), (260, 400), (224, 224), (500, 333), (256, 256))  # (width, height)


def _write_imagenet(root: Path) -> dict[str, list[Path]]:
    image_module = need("PIL.Image", "pip install pillow")
    rng = np.random.default_rng(0)
    files = {}
    for class_index, wnid in enumerate(WNIDS):
        folder = root / wnid
        folder.mkdir(parents=True)
        files[wnid] = []
        for image_index in range(2 + class_index):
            width, height = SIZES[(class_index + image_index) % len(SIZES)]
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            path = folder / f"ILSVRC2012_val_{class_index:04d}{image_index:04d}.JPEG"
            image_module.fromarray(pixels).save(path, format="JPEG", quality=90)
            files[wnid].append(path)
    (root / "notes.txt").write_text("not a class")
    (root / WNIDS[0] / "README").write_text("not an image")
    return files


def _reference_transform(path: Path, size: int = 224, resize: int = 256) -> torch.Tensor:
    """Resize(256) then CenterCrop(224) as torchvision defines them, on the PIL image, written out here."""
    image_module = need("PIL.Image", "pip install pillow")
    image = image_module.open(path).convert("RGB")
    width, height = image.size
    scale = resize / min(width, height)
    target = (resize, int(resize * height / width)) if width <= height else (int(resize * width / height), resize)
    assert abs(target[0] - width * scale) < 1 and abs(target[1] - height * scale) < 1
    image = image.resize(target, image_module.BILINEAR)
    left, top = round((target[0] - size) / 2), round((target[1] - size) / 2)
    array = np.asarray(image)[top:top + size, left:left + size]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def test_imagenet_is_streamed_with_its_labels_known_and_decoded_exactly(tmp_path, monkeypatch):
    image_module = need("PIL.Image", "pip install pillow")
    files = _write_imagenet(tmp_path / "imagenet" / "val")
    opened = []
    original_open = image_module.open
    monkeypatch.setattr(image_module, "open", lambda *a, **k: opened.append(a[0]) or original_open(*a, **k))
    data = imagenet(root=tmp_path)
    assert isinstance(data, StreamedData) and not opened, "nothing is decoded to build the dataset"
    expected_labels = [label for label, wnid in enumerate(WNIDS) for _ in files[wnid]]
    assert len(data) == 9 and data.y.tolist() == expected_labels and not opened
    assert data.classes == WNIDS and data.name == "imagenet" and data.split == "val"
    first = data.x[0]
    assert first.shape == (3, 224, 224) and first.dtype == torch.float32 and len(opened) == 1
    for index, path in enumerate(p for wnid in WNIDS for p in files[wnid]):
        image, label = data[index]
        assert label == expected_labels[index]
        assert torch.equal(image, _reference_transform(path)), path.name
    batch = data.x[2:5]
    assert batch.shape == (3, 3, 224, 224) and 0 <= batch.min() and batch.max() <= 1
    monkeypatch.setattr(image_module, "open", original_open)
    smaller = imagenet("test", root=tmp_path, size=32, resize=40)  # "test" is the CLI's default: val
    assert smaller.split == "val" and smaller.x[5].shape == (3, 32, 32)
    assert torch.equal(smaller.x[5], _reference_transform(files[WNIDS[2]][0], 32, 40))


def test_imagenet_dataset_crops_the_centre(tmp_path):
    image_module = need("PIL.Image", "pip install pillow")
    folder = tmp_path / "val" / "n00000001"
    folder.mkdir(parents=True)
    # 512x256: no resize; the 224 crop starts at column 144, all inside the green middle half (128-384).
    pixels = np.zeros((256, 512, 3), np.uint8)
    pixels[:, :128, 0], pixels[:, 128:384, 1], pixels[:, 384:, 2] = 255, 255, 255
    image_module.fromarray(pixels).save(folder / "a.png")
    dataset = ImageFolderDataset(tmp_path / "val")
    assert dataset.classes == ["n00000001"] and dataset.targets == [0] and len(dataset) == 1
    image, label = dataset[0]
    assert label == 0 and image.shape == (3, 224, 224)
    assert torch.equal(image, torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, 224, 224))


def test_imagenet_roots_names_and_missing_folders(tmp_path):
    files = _write_imagenet(tmp_path / "imagenet" / "val")
    (tmp_path / "imagenet" / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    for root in (tmp_path, tmp_path / "imagenet", tmp_path / "imagenet" / "val"):
        data = imagenet(root=root)
        assert len(data) == sum(len(f) for f in files.values())
        assert data.classes == ("tench", "goldfish", "n02085620")  # a wnid missing from the mapping keeps its id
    with pytest.raises(DatasetNotFoundError) as missing:
        imagenet(root=tmp_path / "nowhere")
    message = str(missing.value)
    assert "\n" not in message and "imagenet/val" in message and "SHIELDKIT_DATA" in message
    with pytest.raises(DatasetNotFoundError, match="train"):
        imagenet("train", root=tmp_path)
    # A data folder of other datasets is not mistaken for the class folders.
    (tmp_path / "other" / "mnist").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError):
        imagenet(root=tmp_path / "other")
    with pytest.raises(InvalidParameterError, match="resize must be >= size"):
        imagenet(root=tmp_path, size=224, resize=200)
    with pytest.raises(InvalidParameterError, match="split='dev'"):
        imagenet("dev", root=tmp_path)


# ------------------------------------------------------------------ normalisation, registry, command line


def test_named_normalizations_and_parse_normalize():
    assert named_normalization("cifar10") == {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
    assert named_normalization("CIFAR-100") == {"mean": [0.5071, 0.4865, 0.4409], "std": [0.2673, 0.2564, 0.2762]}
    assert named_normalization("imagenet") == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert named_normalization("mnist") is None and set(NORMALIZATIONS) == {"cifar10", "cifar100", "imagenet"}
    for name in NORMALIZATIONS:
        assert parse_normalize(name) == named_normalization(name)
    assert parse_normalize("0.5:0.25") == {"mean": [0.5], "std": [0.25]}  # MEAN:STD still works
    assert parse_normalize("cifar10", "model.normalize") == named_normalization("cifar10")
    with pytest.raises(InvalidParameterError) as unknown:
        parse_normalize("cifar11")
    message = str(unknown.value)
    assert "\n" not in message and "cifar10, cifar100, imagenet" in message and "'cifar11'" in message
    layer = Normalize(**named_normalization("imagenet"))
    x = torch.full((1, 3, 2, 2), 0.5)
    assert torch.allclose(layer(x)[0, :, 0, 0], (0.5 - torch.tensor([0.485, 0.456, 0.406])) /
                          torch.tensor([0.229, 0.224, 0.225]))


def test_the_registry_loads_them_by_name(tmp_path):
    assert {cifar10, cifar100, imagenet} <= set(DATASETS)
    assert {"cifar10.native", "cifar100.native", "imagenet.native"} <= set(list_datasets())
    written = _make(tmp_path, "cifar10", "binary", "archive")
    _make(tmp_path, "cifar100", "python", "archive")
    _write_imagenet(tmp_path / "imagenet" / "val")
    data = create_dataset("cifar10", split="train", root=tmp_path)
    assert data.y.tolist() == written["train"]["labels"].tolist()
    assert load("cifar100", split="test", root=tmp_path, label="coarse").num_classes == 20
    streamed = create_dataset("imagenet", split="test", root=tmp_path, size=64)
    assert isinstance(streamed, StreamedData) and streamed.x[0].shape == (3, 64, 64)


def test_evaluate_command_on_cifar10_with_its_named_normalisation(tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    written = _make(root, "cifar10", "binary", "archive")
    monkeypatch.setenv("SHIELDKIT_DATA", str(root))
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 10)).eval()
    model_file = tmp_path / "network.pt2"
    example = torch.rand(2, 3, 32, 32)
    torch.export.save(torch.export.export(network, (example,), dynamic_shapes=({0: torch.export.Dim("b")},)),
                      model_file)
    out = tmp_path / "run"
    code = main(["evaluate", "--model", str(model_file), "--normalize", "cifar10", "--data", "cifar10",
                 "--attacks", "fgsm", "--defenses", "none", "--eps", "0.03", "--n", "4", "--out", str(out),
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    clean = next(r for r in read_rows(out) if r["key"] == "clean|none|0")
    # The rows are the model's predictions on the normalised CIFAR pixels of the 4 sampled test images.
    indices = torch.randperm(TEST_COUNT, generator=torch.Generator().manual_seed(0))[:4].sort().values
    x = _expected_x(written["test"]["data"])[indices]
    normalised = nn.Sequential(Normalize(**named_normalization("cifar10")), network)
    assert clean["pred"] == normalised(x).argmax(1).tolist()
    # An unknown normalisation name: one line, exit 2, nothing run.
    code = main(["evaluate", "--model", str(model_file), "--normalize", "cifar11", "--data", "cifar10",
                 "--out", str(tmp_path / "bad"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cifar10, cifar100, imagenet" in err, err


def test_evaluate_command_streams_imagenet_from_a_configuration(tmp_path, capsys):
    _write_imagenet(tmp_path / "data" / "imagenet" / "val")
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 3)).eval()
    model_file = tmp_path / "network.pt2"
    torch.export.save(torch.export.export(network, (torch.rand(2, 3, 64, 64),),
                                          dynamic_shapes=({0: torch.export.Dim("b")},)), model_file)
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\nname = "imagenet"\nroot = "{tmp_path / "data"}"\nsize = 64\nresize = 72\n')
    out = tmp_path / "run"
    code = main(["evaluate", "--config", str(config), "--model", str(model_file), "--normalize", "imagenet",
                 "--attacks", "fgsm", "--defenses", "none", "--eps", "0.01", "--n", "4", "--out", str(out),
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    clean = next(r for r in read_rows(out) if r["key"] == "clean|none|0")
    data = imagenet(root=tmp_path / "data", size=64, resize=72)
    indices = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:4].sort().values
    normalised = nn.Sequential(Normalize(**named_normalization("imagenet")), network)
    assert clean["pred"] == normalised(data.x[indices]).argmax(1).tolist()
