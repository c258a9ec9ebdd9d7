"""Colour end to end: a generated 3-channel dataset of coloured shapes, read from PNG and JPEG folders and
from .npz/.pt files, a tiny CNN trained on normalised inputs, and `shieldkit evaluate --normalize` with JPEG,
an ART attack and a torchattacks attack; the report's example grid is in colour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shieldkit.cli import main
from shieldkit.data import image_folder, tensor_file
from shieldkit.evaluation.results import read_rows
from shieldkit.models import fit_classifier, tiny_cnn

SIZE = 16
SHAPES = ("square", "disc", "bar", "cross")
PALETTE = ((230, 40, 40), (40, 200, 60), (50, 80, 230), (240, 200, 30), (200, 60, 200))
MEAN, STD = (0.45, 0.42, 0.40), (0.28, 0.27, 0.29)
EPS = 0.03


def coloured_shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``[N, H, W, 3]`` uint8: one shape per image (the class) in a random colour and place on a
    dark noisy background, so colour alone does not give the class away."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, len(SHAPES), size=n)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    for image, label in zip(images, labels):
        cy, cx = rng.integers(5, SIZE - 5, size=2)
        radius = int(rng.integers(3, 5))
        mask = {
            "square": (abs(rows - cy) <= radius) & (abs(cols - cx) <= radius),
            "disc": (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2,
            "bar": (abs(rows - cy) <= 1) & (abs(cols - cx) <= radius + 1),
            "cross": ((abs(rows - cy) <= 1) & (abs(cols - cx) <= radius)) | ((abs(cols - cx) <= 1) & (abs(rows - cy) <= radius)),
        }[SHAPES[label]]
        image[mask] = PALETTE[int(rng.integers(len(PALETTE)))]
    return images, labels.astype(np.int64)


def write_folder(root: Path, split: str, images: np.ndarray, labels: np.ndarray, suffix: str) -> None:
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / split / SHAPES[label]
        folder.mkdir(parents=True, exist_ok=True)
        options = {"quality": 95} if suffix == ".jpg" else {}
        Image.fromarray(image, "RGB").save(folder / f"{index:04d}{suffix}", **options)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The dataset as arrays, PNG and JPEG folders and .npz/.pt files, and a tiny CNN trained on it."""
    root = tmp_path_factory.mktemp("shapes")
    train_x, train_y = coloured_shapes(400, seed=0)
    test_x, test_y = coloured_shapes(100, seed=1)
    for suffix, name in ((".png", "png"), (".jpg", "jpeg")):
        write_folder(root / name, "train", train_x, train_y, suffix)
        write_folder(root / name, "test", test_x, test_y, suffix)
    np.savez(root / "shapes.npz", x=test_x, y=test_y, classes=np.array(SHAPES))  # NHWC uint8
    torch.save({"x": torch.from_numpy(test_x).permute(0, 3, 1, 2).float() / 255,  # NCHW float
                "y": torch.from_numpy(test_y)}, root / "shapes.pt")
    # Classes in the folders are the sub-folders in sorted order; the arrays use SHAPES' order.
    order = sorted(SHAPES)
    remap = torch.tensor([order.index(s) for s in SHAPES])
    test = image_folder("test", root / "png", size=None, channels=None)
    train = image_folder("train", root / "png", size=None, channels=None)
    torch.manual_seed(0)
    network = fit_classifier(nn.Sequential(Standardize(), tiny_cnn(in_channels=3, num_classes=4, input_size=SIZE)),
                             train, epochs=15, batch_size=32, seed=0)[1].eval()  # trained on normalised inputs
    return {"root": root, "test_x": test_x, "test_y": test_y, "remap": remap, "test": test, "network": network}


class Standardize(nn.Module):
    """The normalisation written out by hand, for training: what --normalize must put back in front."""

    def forward(self, x):
        return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def reference(network: nn.Module) -> nn.Module:
    return nn.Sequential(Standardize(), network).eval()


def test_the_loaders_read_the_same_colour_images(shapes):
    expected = torch.from_numpy(shapes["test_x"]).permute(0, 3, 1, 2).float() / 255
    png = shapes["test"]
    assert png.shape == (3, SIZE, SIZE) and len(png) == 100 and png.classes == tuple(sorted(SHAPES))
    # The folder is read class by class; match its images to the arrays by the (unique) pixels.
    by_pixels = {tuple(image.flatten().tolist()): label for image, label in zip(expected, shapes["test_y"])}
    assert [shapes["remap"][by_pixels[tuple(image.flatten().tolist())]].item() for image in png.x] == png.y.tolist()
    npz = tensor_file(path=shapes["root"] / "shapes.npz")
    assert torch.equal(npz.x, expected) and npz.y.tolist() == shapes["test_y"].tolist()
    assert npz.classes == SHAPES
    pt = tensor_file(path=shapes["root"] / "shapes.pt")
    assert torch.equal(pt.x, expected)
    jpeg = image_folder("test", shapes["root"] / "jpeg", size=None, channels=None)
    assert jpeg.shape == (3, SIZE, SIZE) and jpeg.y.tolist() == png.y.tolist()
    assert (jpeg.x - png.x).abs().mean() < 0.08  # lossy (the noisy background most), but the same pictures
    assert (png.x[:, 0] - png.x[:, 1]).abs().max() > 0.5, "the images lost their colour"


def test_tensor_file_layout_errors_name_the_problem(tmp_path):
    np.savez(tmp_path / "square.npz", x=np.zeros((4, 3, 8, 3), np.uint8), y=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="cannot tell the channel axis.*layout='nchw' or 'nhwc'"):
        tensor_file(path=tmp_path / "square.npz")
    assert tensor_file(path=tmp_path / "square.npz", layout="nhwc").shape == (3, 3, 8)
    np.savez(tmp_path / "labels.npz", x=np.zeros((4, 8, 8), np.float32), y=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="4 images in x but 3 labels in y"):
        tensor_file(path=tmp_path / "labels.npz")
    np.savez(tmp_path / "floaty.npz", x=np.zeros((4, 8, 8), np.float32), y=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="must be integer labels"):
        tensor_file(path=tmp_path / "floaty.npz")
    np.savez(tmp_path / "splits.npz", x_train=np.zeros((5, 8, 8), np.uint8), y_train=np.zeros(5, np.int64),
             x_test=np.ones((2, 8, 8), np.uint8) * 255, y_test=np.ones(2, np.int64))
    assert len(tensor_file("train", path=tmp_path / "splits.npz")) == 5
    assert tensor_file("test", path=tmp_path / "splits.npz").x.min() == 1.0


def hand_written_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM (Goodfellow et al. 2015) on cross-entropy, in pixel space, clipped to [0, 1]."""
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def test_evaluate_end_to_end_in_colour(shapes, tmp_path, capsys):
    from PIL import Image

    network, test = shapes["network"], shapes["test"]
    model_file = tmp_path / "network.pt2"  # the network alone: --normalize puts the normalisation back
    torch.export.save(torch.export.export(network, (test.x[:2],), dynamic_shapes=({0: torch.export.Dim("b")},)),
                      model_file)
    out = tmp_path / "run"
    mean, std = ",".join(map(str, MEAN)), ",".join(map(str, STD))
    code = main(["evaluate", "--model", str(model_file), "--normalize", f"{mean}:{std}",
                 "--data", str(shapes["root"] / "png"), "--defenses", "none", "jpeg:quality=60",
                 "--attacks", "fgsm.art", "pgd.torchattacks:steps=5", "--eps", str(EPS), "--out", str(out),
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = read_rows(out)
    reference_model = reference(network)
    predictions = reference_model(test.x).argmax(1)
    clean = next(r for r in rows if r["key"] == "clean|none|0")
    assert clean["pred"] == predictions[:100].tolist()  # --normalize restored the trained pipeline
    assert len(clean["correct"]) >= 70, "the tiny CNN should learn the shapes (chance: 25)"
    # The ART FGSM row, first in the cascade, against FGSM written here on the same normalised model.
    fgsm = next(r for r in rows if r["key"] == f"attack|none|{EPS!r}|naive|fgsm.art|0")
    index = torch.tensor(fgsm["attacked"])
    x_adv = hand_written_fgsm(reference_model, test.x[index], test.y[index], EPS)
    fooled_here = {i for i, p in zip(fgsm["attacked"], reference_model(x_adv).argmax(1).tolist()) if p != test.y[i]}
    assert len(fooled_here ^ set(fgsm["fooled"])) <= 1, (sorted(fooled_here), fgsm["fooled"])
    assert any(r["name"] == "pgd.torchattacks" and r["error"] is None for r in rows if r["key"].startswith("attack"))
    assert any(r["defense"].startswith("jpeg") for r in rows if r["key"].startswith("attack"))
    # Stored adversarial images: three channels, in pixel space, inside the budget.
    examples = [torch.load(path, weights_only=True) for path in (out / "examples").glob("*.pt")]
    assert examples and all(e["x_adv"].shape[1:] == (3, SIZE, SIZE) for e in examples)
    for stored in examples:
        delta = stored["x_adv"] - test.x[stored["indices"]]
        assert stored["x_adv"].min() >= 0 and stored["x_adv"].max() <= 1
        assert delta.abs().max() <= EPS + 1e-5
    # The report's example grid is drawn in colour, not grey.
    grid = np.asarray(Image.open(out / "plots" / "examples.png").convert("RGB")).astype(int)
    assert grid.ndim == 3 and grid.shape[2] == 3
    assert (np.abs(grid[..., 0] - grid[..., 1]) > 60).mean() > 0.001, "the example grid has no colour"
    assert "plots/examples.png" in (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert {d["label"] for d in summary["defenses"]} >= {"none"}


def test_without_normalize_the_same_file_evaluates_another_pipeline(shapes, tmp_path, capsys):
    network, test = shapes["network"], shapes["test"]
    model_file = tmp_path / "network.pt2"
    torch.export.save(torch.export.export(network, (test.x[:2],), dynamic_shapes=({0: torch.export.Dim("b")},)),
                      model_file)
    code = main(["evaluate", "--model", str(model_file), "--data", str(shapes["root"] / "shapes.npz"),
                 "--attacks", "fgsm", "--eps", str(EPS), "--out", str(tmp_path / "raw"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = {r["key"]: r for r in read_rows(tmp_path / "raw")}
    npz = tensor_file(path=shapes["root"] / "shapes.npz")
    assert rows["clean|none|0"]["pred"] == network(npz.x).argmax(1)[:100].tolist()
    # Without its normalisation the network is another classifier: the option is not a no-op.
    assert (network(npz.x).argmax(1) != reference(network)(npz.x).argmax(1)).sum() > 20
    # A colour normalisation in front of grey images: refused in one line before any attack.
    code = main(["evaluate", "--model", str(model_file), "--normalize", "0.5,0.5,0.5:0.2", "--data", "digits",
                 "--out", str(tmp_path / "grey"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "channels" in err and err.count("\n") == 1, err
    assert not (tmp_path / "grey" / "results.jsonl").exists()
