"""Half precision across the backends: every registered torchattacks and ART attack on a float16 and a bfloat16 model.

Each attack runs with its smoke parameters (small budgets) and ``seed=0`` on the
same images through the same trained classifier (scikit-learn's digits at 28x28,
an MLP trained here in seconds) converted to float32, float16 and bfloat16. A cell
says whether the attack works in that dtype (its output in the input's dtype,
inside the bounds and the eps-ball, checked here and not only by shieldkit) and how
many images it fooled, next to the float32 count on the same images: the only
difference between the runs is the model's own rounding. A failure is reported
with its error type and message.

The table goes into docs/backends.md between the markers ``<!-- half-precision:start -->``
and ``<!-- half-precision:end -->`` (``--print`` only prints it); tests/component/test_half_precision.py
checks that it lists every registered backend attack and re-runs a sample.

Usage::

    python bench/half_precision.py [--n 32] [--threads 2] [--print]
"""

from __future__ import annotations

import argparse
import copy
import logging
import re
import sys
import time
import warnings
from pathlib import Path

import torch

import shieldkit as sk
from shieldkit.core.threat import norm_of
from shieldkit.plugins.registry import get_registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "backends.md"
START, END = "<!-- half-precision:start -->", "<!-- half-precision:end -->"
SOURCES = ("torchattacks", "art")
DTYPES = (torch.float16, torch.bfloat16)
#: Budgets for bounded attacks whose smoke parameters set none (digits are MNIST-like: 8/255 fools little).
EPS = {"linf": 0.1, "l2": 1.0, "l1": 10.0, "l0": 10.0}


def attack_params(name: str) -> dict:
    """What the table runs ``name`` with: its smoke parameters, a seed and a digits-sized budget."""
    cls = get_registry().resolve("attack", name).obj
    params = {"seed": 0, **cls.smoke_params}
    if cls.bounded and "eps" not in params:
        params["eps"] = EPS[cls.norms[0]]
    return params


def fooled_within_budget(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """How many of ``x`` the attack fools on ``model`` in ``model``'s dtype; raises if the output breaks the contract.

    The checks are written here, not read from the result: the output's dtype, the
    bounds, the eps-ball (in the dtype, where eps itself rounds) and the success
    count from the model's own predictions on the output.
    """
    dtype = next(model.parameters()).dtype
    attack = sk.create_attack(name, **attack_params(name))
    x_in = x.to(dtype)
    x_adv = attack(model, x_in, y)
    if x_adv.dtype != dtype or x_adv.shape != x.shape:
        raise AssertionError(f"returned {x_adv.dtype} {tuple(x_adv.shape)}, expected {dtype} {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all() or x_adv.min() < 0 or x_adv.max() > 1:
        raise AssertionError("output outside the bounds [0, 1]")
    if attack.eps is not None:
        # Exactly (in float64), not in the dtype's arithmetic, where x_adv - x rounds. Half precision must
        # hold exactly in L-inf (the backends round into the ball); float32 is compared by the attack
        # contract as float32 tensors compare, an ulp at 1.0; other norms within the dtype's rounding.
        distance = norm_of(x_adv.double() - x_in.double(), attack.norm).max().item()
        exact = attack.norm == "linf" and dtype in DTYPES
        allowed = attack.eps if exact else attack.eps * (1 + 4 * torch.finfo(dtype).eps) + torch.finfo(dtype).eps
        if distance > allowed:
            raise AssertionError(f"{attack.norm} distance {distance:.5g} > eps {attack.eps:.5g}")
    with torch.no_grad():
        return int((model(x_adv).argmax(dim=1) != y).sum())


def digits_model_and_images(n: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The MLP of tests/conftest.py's ``digits_mlp`` and the first ``n`` test images it classifies correctly."""
    from shieldkit.data import load
    from shieldkit.models import fit_classifier, mlp

    test, train = load("digits", split="test"), load("digits", split="train")
    torch.manual_seed(0)
    model = fit_classifier(mlp(hidden=(64,)), train, epochs=8, seed=0).eval()
    with torch.no_grad():
        correct = model(test.x).argmax(dim=1) == test.y
    return model, test.x[correct][:n], test.y[correct][:n]


def cell(fooled: int | Exception, reference: int | Exception, n: int) -> str:
    if isinstance(fooled, Exception):
        message = str(fooled).splitlines()[0] if str(fooled) else ""
        return f"fails: {type(fooled).__name__}: {message[:90]}".replace("|", "/")
    if isinstance(reference, Exception):
        return f"works: {fooled}/{n} fooled (float32 fails)"
    return f"works: {fooled}/{n} fooled (float32 {reference}/{n})"


def measure(n: int) -> tuple[list[str], dict]:
    model, x, y = digits_model_and_images(n)
    models = {dtype: copy.deepcopy(model).to(dtype) for dtype in (torch.float32, *DTYPES)}
    rows = []
    for source in SOURCES:
        for name in sk.list_attacks(source=source):
            started = time.perf_counter()
            outcome = {}
            for dtype, typed_model in models.items():
                try:
                    outcome[dtype] = fooled_within_budget(name, typed_model, x, y)
                except Exception as error:  # noqa: BLE001 - the table reports whatever it was
                    outcome[dtype] = error
            reference = outcome[torch.float32]
            note = []
            for dtype in DTYPES:
                if isinstance(outcome[dtype], int) and isinstance(reference, int) and abs(outcome[dtype] - reference) > max(1, n // 8):
                    note.append(f"{str(dtype)[6:]} differs by {outcome[dtype] - reference:+d}")
            if isinstance(reference, Exception):
                note.append(f"fails in float32 too: {type(reference).__name__}")
            rows.append(f"| `{name}` | {cell(outcome[torch.float16], reference, n)} | "
                        f"{cell(outcome[torch.bfloat16], reference, n)} | {'; '.join(note)} |")
            print(f"{name:36s} {time.perf_counter() - started:6.1f}s", file=sys.stderr, flush=True)
    return rows, {"n": n}


def table(rows: list[str], n: int) -> str:
    header = [
        START,
        f"Generated by `python bench/half_precision.py --n {n}` ({torch.__version__}, CPU): {n} digits test images,",
        "an MLP trained on the digits, each attack's smoke parameters and `seed=0` (bounded attacks without a smoke",
        "budget: eps 0.1 in L-inf, 1.0 in L2). \"works\": the output is in the input's dtype, inside the bounds and",
        "the eps-ball, measured in float64 (checked by the script); \"fooled\" counts the model's own",
        "predictions on it.",
        "",
        "| attack | float16 | bfloat16 | note |",
        "| --- | --- | --- | --- |",
    ]
    return "\n".join(header + rows + [END])


def write(text: str) -> None:
    doc = DOC.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{DOC}: no {START} ... {END} markers")
    DOC.write_text(pattern.sub(lambda _: text, doc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=32, help="images per attack")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--print", action="store_true", help="print the table instead of writing docs/backends.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    rows, _ = measure(args.n)
    text = table(rows, args.n)
    print(text)
    if not args.print:
        write(text)


if __name__ == "__main__":
    main()
