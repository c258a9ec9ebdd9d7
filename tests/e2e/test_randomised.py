"""A randomised model judged by its expected accuracy (issue 23), on a synthetic model whose truth is known.

The model (its answer a discrete draw: no gradient, so naive attacks only) answers each image's true label with a probability written into the image itself (pixel 0), and
another label otherwise: its expected accuracy is the mean of those probabilities, its majority-vote accuracy
the share above one half. An attack at a budget far below the pixels' meaning cannot change either, so the
evaluation's clean and robust figures must land on both, with intervals that cover them.
"""

from __future__ import annotations

import torch
from torch import nn

from shieldkit.data import ImageData
from shieldkit.evaluation import evaluate


class Coin(nn.Module):
    """Right with probability ``x[:, 0, 0, 0]`` on label ``round(9 * x[:, 0, 0, 1])``, a fresh draw every forward."""

    def forward(self, x):
        p, label = x[:, 0, 0, 0], torch.round(9 * x[:, 0, 0, 1]).long()
        right = torch.rand(p.shape, device=x.device) < p
        answer = torch.where(right, label, (label + 1) % 10)
        return 4 * nn.functional.one_hot(answer, 10).float() + 0 * x.flatten(1)[:, :10]


def test_the_evaluation_reports_a_randomised_models_expected_and_majority_accuracy(tmp_path):
    generator = torch.Generator().manual_seed(0)
    n = 200
    p = torch.cat([torch.rand(n // 2, generator=generator), torch.ones(n // 4), torch.zeros(n // 4)])
    y = torch.randint(0, 10, (n,), generator=generator)
    x = torch.rand(n, 1, 8, 8, generator=generator) * 0.2 + 0.4
    x[:, 0, 0, 0], x[:, 0, 0, 1] = p, y / 9
    report = evaluate(Coin(), ImageData(x, y, name="coins"), attacks=["fgsm"], eps=[0.001], out_dir=tmp_path,
                      quiet=True, checks=False, adaptive=False)
    record = report.run.defense("none")
    true, majority = p.mean().item(), (p > 0.5).float().mean().item()
    assert record.judging_draws >= 16 and record.diagnosis.judging_draws == record.judging_draws
    # each image judged on >= 16 draws: the mean over 200 images is within a few points of the truth
    assert abs(record.clean_accuracy - true) < 0.03, (record.clean_accuracy, true)
    low, high = record.clean_interval
    assert low <= true <= high and high - low < 0.2
    # the majority vote is wrong only on images whose probability is near one half
    assert abs(record.clean_majority - majority) < 0.05, (record.clean_majority, majority)
    entry = record.eps["0.001"]
    # one draw judged the model at 50% of its hesitant images' worst-case: expected is not "any draw wrong"
    assert abs(entry.adaptive - true) < 0.05, (entry.adaptive, true)
    assert entry.interval["adaptive"][0] <= true <= entry.interval["adaptive"][1]
    assert abs(entry.majority["adaptive"] - majority) < 0.06
    assert "expected" in (tmp_path / "report.md").read_text()
