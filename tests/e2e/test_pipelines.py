"""Real pipelines: the evaluation on a user's Dataset, DataLoader, NumPy arrays and model outputs.

Each form of the same data, and each form of the same model's output, must give the same rows as plain tensors
and a plain-logits model (timings aside); a dataset 20 times its chunk is read one chunk at a time, so the peak
memory of a run does not grow with the dataset; a resume over a dataset redoes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import shieldkit as sk
from shieldkit.core.errors import InvalidInputError, InvalidModelError, InvalidParameterError

REPO = Path(__file__).resolve().parents[2]
VOLATILE = {"seconds", "time", "forwards_per_second"}
ATTACKS = ["fgsm", ("pgd", {"steps": 5})]


def outcomes(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def run(model, data, out: Path, **options):
    options = {"attacks": ATTACKS, "eps": [0.1], "batch_size": 16, "n": 40, "checks": False, "quiet": True,
               **options}
    return sk.evaluate(model, data, out_dir=out, **options)


@pytest.fixture(scope="module")
def images(mnist_test):
    """80 real MNIST test images (pixels k/255, so a uint8 round trip is exact)."""
    data = mnist_test.head(80)
    return data.x.clone(), data.y.clone()


@pytest.fixture(scope="module")
def reference(mnist_model, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("tensors")
    run(mnist_model, images, out)
    return outcomes(out)


class Pairs(Dataset):
    """A user's dataset of ``(image tensor, int label)`` pairs, counting the items read."""

    def __init__(self, x, y):
        self.x, self.y, self.reads = x, y, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        self.reads += 1
        return self.x[index], int(self.y[index])


class HuggingFaceStyle(Dataset):
    """Items as a Hugging Face image dataset gives them: a dict of a channels-last uint8 array and a label."""

    def __init__(self, x, y):
        self.pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        self.y = y.numpy()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return {"pixel_values": self.pixels[index], "label": self.y[index]}


@pytest.mark.parametrize("form", ["numpy", "tensor_dataset", "dataset", "shuffled_loader", "dict_dataset"])
def test_every_form_of_the_data_gives_the_rows_of_plain_tensors(form, mnist_model, images, reference, tmp_path):
    x, y = images
    data = {
        "numpy": lambda: (x.numpy(), y.numpy()),
        "tensor_dataset": lambda: TensorDataset(x, y),
        "dataset": lambda: Pairs(x, y),
        "shuffled_loader": lambda: DataLoader(Pairs(x, y), batch_size=7, shuffle=True),
        "dict_dataset": lambda: HuggingFaceStyle(x, y),
    }[form]()
    run(mnist_model, data, tmp_path)
    assert outcomes(tmp_path) == reference


def test_a_dataset_is_read_by_chunk_and_a_resume_reads_only_what_it_still_needs(mnist_model, images, tmp_path):
    x, y = images
    first = Pairs(x, y)
    run(mnist_model, first, tmp_path, n=None)
    complete = outcomes(tmp_path)
    # every image read a bounded number of times (each chunk once per stage group, the first ones by the
    # model check and the examples), never the whole set per unit
    assert first.reads <= 6 * len(y)
    lines = (tmp_path / "results.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "results.jsonl").write_text("".join(lines[: len(lines) // 2]))  # the run died half way
    again = Pairs(x, y)
    run(mnist_model, again, tmp_path, n=None, resume=True)
    assert outcomes(tmp_path) == complete
    assert again.reads < first.reads


def test_a_resume_over_a_changed_dataset_is_refused(mnist_model, images, tmp_path):
    x, y = images
    run(mnist_model, Pairs(x, y), tmp_path, n=None)
    changed = x.clone()
    changed[0] = 1 - changed[0]
    with pytest.raises(InvalidParameterError, match="resume"):
        run(mnist_model, Pairs(changed, y), tmp_path, n=None, resume=True)


Output = namedtuple("Output", "logits hidden")


class Wrapped(nn.Module):
    """The plain model behind an output of another shape."""

    def __init__(self, model: nn.Module, form: str):
        super().__init__()
        self.model, self.form = model, form

    def forward(self, x):
        logits = self.model(x)
        if self.form == "tuple":
            return logits, x.flatten(1)
        if self.form == "dict":
            return {"logits": logits, "features": x.flatten(1)}
        if self.form == "object":
            return Output(logits=logits, hidden=None)
        return {"scores": logits}


@pytest.mark.parametrize("form", ["tuple", "dict", "object"])
def test_models_returning_tuples_dicts_and_output_objects_give_the_plain_model_s_rows(
        form, mnist_model, images, reference, tmp_path, caplog):
    with caplog.at_level("INFO", logger="shieldkit"):
        run(Wrapped(mnist_model, form), images, tmp_path)
    assert outcomes(tmp_path) == reference
    said = [r.getMessage() for r in caplog.records if "taken as the logits" in r.getMessage()]
    assert len(said) == 1


def test_an_output_without_logits_is_refused_in_one_line_before_any_attack(mnist_model, images, tmp_path):
    with pytest.raises(InvalidModelError) as caught:
        run(Wrapped(mnist_model, "scores"), images, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "dict" in message and "logits" in message
    assert not (tmp_path / "results.jsonl").exists()


def test_bad_data_is_refused_in_one_line(mnist_model, images, tmp_path):
    x, y = images
    cases = [
        (object(), InvalidParameterError, "data"),
        ([(x[0], "three"), (x[1], 1)], InvalidInputError, "label"),
        (Pairs(x * 2 - 1, y), InvalidInputError, r"outside \[0, 1\].*Normalize"),
        (TensorDataset(x * 2 - 1, y), InvalidInputError, "must lie in"),
    ]
    for data, error, words in cases:
        with pytest.raises(error, match=words) as caught:
            run(mnist_model, data, tmp_path)
        assert "\n" not in str(caught.value)


def test_bf16_attacks_under_autocast_keep_the_contract_and_their_strength(mnist_model, images, reference, tmp_path):
    report = run(mnist_model, images, tmp_path, precision="bf16")
    rows = outcomes(tmp_path)
    robust = report.summary.defenses[0].eps[0].robust if hasattr(report.summary, "defenses") else None
    # the same samples are attacked and judged in fp32; bf16 gradients may move a few outcomes, not many
    fooled = {r["key"]: set(r.get("fooled", [])) for r in rows if r.get("type") == "attack"}
    fooled_fp32 = {r["key"]: set(r.get("fooled", [])) for r in reference if r.get("type") == "attack"}
    assert fooled.keys() == fooled_fp32.keys()
    total = sum(len(v) for v in fooled_fp32.values())
    assert sum(len(v) for v in fooled.values()) >= 0.8 * total
    assert robust is None or 0 <= robust <= 1
    assert json.loads((tmp_path / "config.json").read_text())["config"]["precision"] == "bf16"


def test_batch_size_auto_on_a_cpu_keeps_the_default(mnist_model, images, tmp_path):
    run(mnist_model, images, tmp_path, batch_size="auto")
    assert json.loads((tmp_path / "config.json").read_text())["config"]["batch_size"] == 40  # min(100, n)


PEAK = textwrap.dedent("""
    import json, resource, sys, torch
    from torch import nn
    import shieldkit as sk
    n, side = int(sys.argv[1]), int(sys.argv[2])

    class Generated(torch.utils.data.Dataset):  # images made on demand: nothing held but what is asked for
        def __len__(self):
            return n
        def __getitem__(self, index):
            g = torch.Generator().manual_seed(index)
            return torch.rand(3, side, side, generator=g), index % 10

    torch.manual_seed(0)
    model = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(3 * (side // 8) ** 2, 10)).eval()
    sk.evaluate(model, Generated(), attacks=["fgsm"], eps=[0.03], batch_size=16, checks=False, quiet=True,
                out_dir=sys.argv[3], examples=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    print(json.dumps({"peak_kib": peak // 1024 if sys.platform == "darwin" else peak}))
""")


def peak_kib(n: int, side: int, out: Path) -> int:
    result = subprocess.run([sys.executable, "-c", PEAK, str(n), str(side), str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_kib"]


def test_peak_memory_does_not_grow_with_a_dataset_twenty_times_its_chunk(tmp_path):
    side = 160
    image_kib = 3 * side * side * 4 / 1024
    small = peak_kib(64, side, tmp_path / "small")  # 4 chunks of 16 (the diagnosis reads the first 64)
    large = peak_kib(320, side, tmp_path / "large")  # 20 chunks of 16
    held = (320 - 64) * image_kib  # what holding the larger set in memory would add: ~77 MiB
    assert large - small < 0.4 * held, (small, large, held)


def test_colour_images_get_robustbench_s_grid_said_at_the_start(tmp_path, caplog):
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(12, 3, 32, 32, generator=generator), torch.arange(12) % 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3)).eval()
    with caplog.at_level("INFO", logger="shieldkit"):
        sk.evaluate(model, (x, y), attacks=["fgsm"], checks=False, quiet=True, out_dir=tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["eps"] == [2 / 255, 4 / 255, 8 / 255]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eps grid")]
    assert said and "2/255, 4/255, 8/255" in said[0] and "3x32x32" in said[0]
    assert "8/255" in (tmp_path / "report.md").read_text()
