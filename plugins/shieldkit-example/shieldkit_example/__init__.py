"""shieldkit-example: a third-party plugin, found by its entry point in the group ``shieldkit``.

It adds what the core does not have: a salt-and-pepper noise attack
(``salt_pepper.example``) and a Gaussian-blur input transform
(``gaussian_blur.example``). ``pip install`` is all it takes for them to appear.
It also keeps a log of finished evaluations (``shieldkit_run_finished``): one CSV
line per run, in the file ``SHIELDKIT_EXAMPLE_RUNS_CSV`` names (default:
``shieldkit-runs.csv`` beside the run's folder), the way a tracker plugin would
send the run to MLflow or TensorBoard.
"""

import csv
import os
from datetime import datetime, timezone
from pathlib import Path

import shieldkit as sk
from shieldkit_example.gaussian_blur import GaussianBlur
from shieldkit_example.salt_pepper import SaltPepper

__all__ = ["RUNS_CSV", "GaussianBlur", "SaltPepper", "register_attacks", "register_defenses",
           "shieldkit_run_finished"]

#: the environment variable naming the runs' CSV file
RUNS_CSV = "SHIELDKIT_EXAMPLE_RUNS_CSV"
#: its columns: per run, the run's largest eps and, per defence (';'-separated, in the run's order), the clean
#: and the adaptive robust accuracy there, as fractions in [0, 1]
COLUMNS = ("finished", "run", "data", "n", "norm", "eps", "defenses", "clean_accuracy", "robust_accuracy")


@sk.hookimpl
def register_attacks(register):
    register(SaltPepper)


@sk.hookimpl
def register_defenses(register):
    register(GaussianBlur)


@sk.hookimpl
def shieldkit_run_finished(summary, out_dir):
    """Append one line for this run to the runs' CSV file (its header first, when the file is new)."""
    path = Path(os.environ.get(RUNS_CSV) or Path(out_dir).parent / "shieldkit-runs.csv")
    eps = max(summary["eps"])
    key = f"{eps:g}"  # how summary.json names an eps's entry
    defenses = summary["defenses"]
    row = [datetime.now(timezone.utc).isoformat(timespec="seconds"), str(out_dir), summary["data"], summary["n"],
           summary["norm"], eps, ";".join(d["label"] for d in defenses),
           ";".join(repr(d["clean_accuracy"]) for d in defenses),
           ";".join(repr(d["eps"][key]["adaptive"]) for d in defenses)]
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(COLUMNS)
        writer.writerow(row)
