"""``shieldkit.evaluate``: the evaluation's public function (also ``shieldkit.evaluation.evaluate``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from shieldkit.core.threat import check_norm
from shieldkit.evaluation.config import DEFAULT_OUT, EvalConfig, parse_eps
from shieldkit.evaluation.presets import check_suite
from shieldkit.evaluation.results import default_run_dir, discard_if_empty, mark_latest
from shieldkit.evaluation.runner import Runner
from shieldkit.infra.progress import progress_log


def evaluate(model: nn.Module, data: Any, attacks: list | tuple | None = None, defenses: list | tuple = ("none",),
             eps: float | str | list[float | str] | tuple[float | str, ...] | None = None, *, norm: str = "linf",
             n: int | None = None, batch_size: int | str = 100, out_dir: str | os.PathLike | None = None,
             seed: int = 0, quiet: bool = False, resume: bool = False, train_data: Any = None,
             cascade: bool = True, adaptive: bool = True, eot: int = 8, checks: bool = True,
             examples: int = 6, fpr: float = 0.05, bounds: tuple[float, float] = (0.0, 1.0),
             suite: str = "standard", precision: str = "fp32"):
    """Evaluate a model's robustness against an attack suite, with and without defences.

    Every attack runs naively on each deployed defence and adaptively on the
    defence's attack view (BPDA for non-differentiable transforms, EOT for
    randomised ones, the defence's own adaptive attack where it has one). Robust
    accuracy per (defence, eps) is the worst case per sample over the whole suite;
    later attacks only attack samples still robust (a cascade). A gradient-masking
    checklist flags numbers that cannot be trusted. Everything is written to
    ``out_dir`` as it finishes; ``resume=True`` continues an interrupted run.

    Args:
        model: classifier from images in ``bounds`` to logits (normalisation inside); a model returning a tuple,
            a dict or an object with ``.logits`` is read through :class:`~shieldkit.core.outputs.LogitsOutput`.
        data: the evaluation set: ``ImageData``, an ``(x, y)`` pair of tensors or NumPy arrays, a map-style
            ``Dataset`` of ``(image, label)`` pairs or dicts (Hugging Face's ``{"pixel_values", "label"}``), or a
            ``DataLoader``; a dataset is read one chunk at a time (:mod:`~shieldkit.data.streamed`).
        attacks: names (``"pgd"``, ``"pgd.art"``), ``(name, params)`` pairs,
            ``{"name": ..., **params}`` dicts or ``Attack`` instances; default: the
            preset ``suite``.
        defenses: the same forms for defences; ``"none"`` is the undefended model.
            Trainers and detectors are fitted on ``train_data`` first (a dict entry's
            ``"fit"`` holds fit options).
        eps: the budgets of the grid: numbers or fractions as papers write them (``"8/255"``, ``[2/255, 8/255]``);
            ``None``: the data's default grid (MNIST-like L-inf 0.1/0.2/0.3; 32x32 colour 2/255, 4/255, 8/255;
            ImageNet-size 2/255, 4/255; :func:`~shieldkit.evaluation.config.default_eps`), logged at the start.
        norm: the grid's norm; every attack must support it.
        n: evaluate a seeded random subset of this many samples (``None``: all).
        batch_size: samples per unit of work (also the resume and sharding granularity); ``"auto"``: the
            largest chunk the model's GPU holds (:func:`~shieldkit.infra.memory.auto_batch_size`).
        out_dir: where results.jsonl, summary.json, summary.csv, report.md/html and records go; ``None``: a new
            sub-folder per run of ``shieldkit-runs/evaluate`` named by the time it starts
            (``shieldkit-runs/evaluate/2026-12-07-143012``, with a ``latest`` link to it), so that a run never
            replaces the one before.
        seed: seeds every unit (per sample range, not per process).
        quiet: no progress bars.
        resume: continue the run in ``out_dir`` (refused if the configuration changed); with ``out_dir=None``, the
            latest run of ``shieldkit-runs/evaluate``.
        train_data: data to fit trainer defences and detectors on.
        cascade: attack only samples still robust (``False``: the full grid).
        adaptive: run the adaptive stage.
        eot: random draws averaged for randomised defences.
        checks: run the gradient-masking checklist.
        examples: samples shown in the report's example grid.
        fpr: detectors' false-positive rate on clean training images.
        bounds: the pixel range.
        suite: the preset run when ``attacks`` is not given: ``"quick"``, ``"standard"``
            (AutoAttack's strength, the default) or ``"thorough"`` (:mod:`~shieldkit.evaluation.presets`).
        precision: the attacks' arithmetic, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (under autocast on the model's
            device; images, the budget and the judging stay in fp32). The device is the model's.

    Returns:
        A :class:`~shieldkit.evaluation.report.Report`.
    """
    config = EvalConfig(eps=parse_eps(eps), norm=norm, n=n, batch_size=batch_size, seed=seed, cascade=cascade,
                        adaptive=adaptive, eot=eot, checks=checks, examples=examples, fpr=fpr,
                        bounds=tuple(bounds), out=str(Path(DEFAULT_OUT if out_dir is None else out_dir)),
                        suite=check_suite(suite), precision=precision)
    config.norm = check_norm(norm, owner="evaluate")
    if out_dir is None:  # the run's own sub-folder of the default folder (resume: the latest)
        config.out = str(default_run_dir(config.out, resume=resume))
    try:
        runner = Runner(config, model, data, train_data=train_data, quiet=quiet, resume=resume,
                        attacks=list(attacks or []),
                        defenses=list(defenses if not isinstance(defenses, str) else [defenses]))
    except BaseException:
        if out_dir is None:
            discard_if_empty(config.out)
        raise
    if out_dir is None:
        mark_latest(config.out)
    with progress_log(quiet):  # off a terminal (a notebook, a log file) a line per group with the time left
        return runner.run()
