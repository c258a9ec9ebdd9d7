"""The gradient-masking checklist: measurements on the models, then flags with reasons.

A robustness number computed with attacks whose gradients are masked is
meaningless. Following Carlini et al. (2019, section 5) and AutoAttack's sanity
checks, every (defence, naive|adaptive) evaluation is checked for:

1. ``monotone``: robust accuracy must not rise with epsilon.
2. ``large_eps``: the strongest white-box attack at an epsilon covering the whole
   pixel range must bring accuracy to about zero.
3. ``black_box``: black-box and noise attacks must not fool samples the
   white-box attacks could not.
4. ``randomness``: predictions that change between repeated forwards need EOT.
5. ``zero_gradients``: input gradients that are exactly zero (or do not flow at
   all) mean gradient attacks are blind.
6. ``errors``: an attack that crashed leaves its samples counted as robust.

A failed check becomes a flag printed next to the number it casts doubt on.

Reference:
    Carlini et al. On Evaluating Adversarial Robustness. arXiv:1902.06705, 2019.
    Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks (AutoAttack). ICML 2020.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

#: Thresholds of the checks (documented in docs/evaluate.md).
LARGE_EPS_MAX_ACCURACY = 0.10
BLACK_BOX_MAX_SHARE = 0.02
BLACK_BOX_MIN_SAMPLES = 2
ZERO_GRADIENT_MAX_SHARE = 0.10
MONOTONE_TOLERANCE = 0.01
CHECK_SAMPLES = 32


# ---------------------------------------------------------------- measurements


@torch.no_grad()
def measure_randomness(forward, x: Tensor, seeds: tuple[int, int]) -> dict[str, Any]:
    """Forward ``x`` twice under different seeds; how often do predictions and logits change?

    Args:
        forward: ``seed -> logits`` (the runner reseeds the defence inside).
        x: clean images.
        seeds: the two seeds.
    """
    first, second = forward(x, seeds[0]), forward(x, seeds[1])
    changed = (first.argmax(1) != second.argmax(1)).float().mean().item()
    return {"changed_predictions": changed, "max_logit_difference": (first - second).abs().max().item()}


def measure_gradients(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Share of samples whose input gradient is exactly zero, for the cross-entropy and the margin loss.

    The margin loss (best other logit minus true logit) does not saturate, so a
    zero margin gradient means the model is flat (or cut) around the input, not
    merely confident.
    """
    try:
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            ce = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            (grad_ce,) = torch.autograd.grad(ce, x, retain_graph=True)
            true = logits.gather(1, y[:, None]).squeeze(1)
            others = logits.clone()
            others.scatter_(1, y[:, None], float("-inf"))
            margin = (others.max(1).values - true).sum()
            (grad_margin,) = torch.autograd.grad(margin, x)
    except RuntimeError as error:
        return {"zero_ce": 1.0, "zero_margin": 1.0, "error": _one_line(error)}
    zero = lambda g: (g.reshape(len(g), -1).abs().amax(1) == 0).float().mean().item()  # noqa: E731
    return {"zero_ce": zero(grad_ce), "zero_margin": zero(grad_margin), "error": None}


# ---------------------------------------------------------------------- flags


def check_flags(defense: dict[str, Any], mode: str, check_rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """All checks for one defence's naive or adaptive evaluation.

    Args:
        defense: the defence's summary record (accuracies per eps, fooled-sample sets).
        mode: ``"naive"`` or ``"adaptive"``.
        check_rows: the measurement rows of this defence by check name.

    Returns:
        One record per check: ``check``, ``mode``, ``passed`` (``None`` when it
        could not run), ``value`` and ``reason``.
    """
    results = [
        _monotone(defense, mode),
        _large_eps(check_rows.get(f"large_eps|{mode}")),
        _black_box(defense, mode),
        _randomness(check_rows.get("randomness"), mode, defense),
        _zero_gradients(check_rows.get(f"gradients|{mode}")),
        _errors(defense, mode),
    ]
    for record in results:
        record["mode"] = mode
    return results


def _result(check: str, passed: bool | None, value: Any, reason: str) -> dict[str, Any]:
    return {"check": check, "passed": passed, "value": value, "reason": reason}


def _monotone(defense: dict[str, Any], mode: str) -> dict[str, Any]:
    series = [(float(eps), record[mode]) for eps, record in defense["eps"].items()]
    series.sort()
    tolerance = max(MONOTONE_TOLERANCE, 1.5 / max(1, defense["n"]))
    for (eps_low, low), (eps_high, high) in zip(series, series[1:]):
        if high > low + tolerance:
            return _result("monotone", False, high - low,
                           f"accuracy rises with eps ({100 * low:.1f}% at {eps_low:g} -> {100 * high:.1f}% at "
                           f"{eps_high:g}): the attacks are not finding what exists")
    return _result("monotone", True, None, "accuracy does not rise with eps")


def _large_eps(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return _result("large_eps", None, None, "not run (no white-box attack in the suite)")
    if row.get("error"):
        return _result("large_eps", False, None, f"{row['attack']} at eps={row['eps']:g} crashed: {row['error']}")
    accuracy = row["accuracy"]
    if accuracy > LARGE_EPS_MAX_ACCURACY:
        return _result("large_eps", False, accuracy,
                       f"{row['attack']} at eps={row['eps']:g} (the whole pixel range) leaves {100 * accuracy:.0f}% "
                       "accuracy instead of ~0%: its gradients are masked")
    return _result("large_eps", True, accuracy, f"{row['attack']} at eps={row['eps']:g} leaves {100 * accuracy:.0f}%")


def _black_box(defense: dict[str, Any], mode: str) -> dict[str, Any]:
    worst = None
    for eps, record in defense["eps"].items():
        extra = record["black_box_extra"][mode]
        base = max(1, record["clean_correct"])
        if extra >= BLACK_BOX_MIN_SAMPLES and extra / base > BLACK_BOX_MAX_SHARE:
            if worst is None or extra / base > worst[1]:
                worst = (eps, extra / base, extra)
    if worst is None:
        return _result("black_box", True, None, "black-box attacks found nothing the white-box ones missed")
    eps, share, extra = worst
    return _result("black_box", False, share,
                   f"black-box/noise attacks fooled {extra} samples ({100 * share:.0f}%) at eps={float(eps):g} that "
                   "every white-box attack missed: gradients are misleading")


def _randomness(row: dict[str, Any] | None, mode: str, defense: dict[str, Any]) -> dict[str, Any]:
    if row is None:
        return _result("randomness", None, None, "not measured")
    changed = row["changed_predictions"]
    if changed <= 0 and row["max_logit_difference"] < 1e-5:
        return _result("randomness", True, 0.0, "repeated forwards agree")
    eot = defense.get("eot", 1)
    if mode == "adaptive" and eot > 1:
        return _result("randomness", True, changed, f"randomised ({100 * changed:.0f}% of predictions change); EOT over {eot} draws used")
    return _result("randomness", False, changed,
                   f"repeated forwards change {100 * changed:.0f}% of predictions (logits by up to "
                   f"{row['max_logit_difference']:.2g}): attacks without EOT overestimate robustness")


def _zero_gradients(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return _result("zero_gradients", None, None, "not measured")
    if row.get("error"):
        return _result("zero_gradients", False, 1.0, f"gradients do not flow through the attacked model ({row['error']})")
    share = row["zero_margin"]
    if share > ZERO_GRADIENT_MAX_SHARE:
        return _result("zero_gradients", False, share,
                       f"{100 * share:.0f}% of samples have an all-zero input gradient: gradient attacks are blind")
    return _result("zero_gradients", True, share,
                   f"{100 * share:.0f}% zero margin gradients ({100 * row['zero_ce']:.0f}% for cross-entropy)")


def _errors(defense: dict[str, Any], mode: str) -> dict[str, Any]:
    errors = defense["errors"].get(mode, [])
    if errors:
        return _result("errors", False, len(errors),
                       f"{len(errors)} attack run(s) crashed and counted their samples as robust, e.g. {errors[0]}")
    return _result("errors", True, 0, "no attack crashed")


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return text[:200]
