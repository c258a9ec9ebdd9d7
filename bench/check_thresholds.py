"""The four machine-sensitive tests (issue 27) under other thread counts and seeds, and against weakened attacks.

    SHIELDKIT_DATA=../shared/data python bench/check_thresholds.py              # about 25 minutes
    SHIELDKIT_DATA=../shared/data python bench/check_thresholds.py --only weakened

A fresh machine trains the tests' session model with other CPU kernels, and its
weights differ about as much as another seed's. This runs the tests that hold
figures of that model in fresh pytest processes:

- ``variants``: with ``OMP_NUM_THREADS`` 1 and 2, each with the session models
  trained from seed 0 and seed 1 (``SHIELDKIT_TEST_SEED``): every test must pass;
- ``weakened``: with one attack weakened at a time (this script's pytest plugin
  patches it in the test process): DeepFool without its projection rounds, DeepFool
  overshooting by 10% or 25% instead of 2%, native PGD with a step 5% too long, ART's
  AutoAttack with one APGD step: each weakening must fail the tests it names and
  leave the others it runs passing.

Writes bench/results/check_thresholds.md (a Markdown table: what ran, the outcome
of each test, whether that was the expected one) and exits 1 if any was not.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "check_thresholds.md"

DEEPFOOL_REFERENCE = "tests/component/test_attacks_native.py::test_deepfool_perturbation_is_no_larger_than_the_reference"
PGD_STEP_BY_STEP = "tests/component/test_backends.py::test_pgd_without_random_start_agrees_across_sources_step_by_step"
PGD_TEN_STEPS = "tests/component/test_backends.py::test_pgd_without_random_start_agrees_across_sources"
DEEPFOOL_SOURCES = "tests/component/test_backends.py::test_deepfool_l2_agrees_across_sources"
AUTOATTACK = "tests/component/test_backends.py::test_autoattack_robust_accuracy_agrees_between_torchattacks_and_art"

TESTS = [f"{DEEPFOOL_REFERENCE}[l2]", f"{DEEPFOOL_REFERENCE}[linf]",
         f"{PGD_STEP_BY_STEP}[l2-1.0-0.1]", f"{PGD_STEP_BY_STEP}[linf-0.1-0.01]",
         f"{PGD_TEN_STEPS}[l2-1.0-0.1]", f"{PGD_TEN_STEPS}[linf-0.1-0.01]",
         DEEPFOOL_SOURCES, AUTOATTACK]

#: weakening -> (the tests it runs, the tests that must fail)
WEAKENED = {
    "deepfool_no_projection": ([f"{DEEPFOOL_REFERENCE}[l2]"], [f"{DEEPFOOL_REFERENCE}[l2]"]),
    "deepfool_overshoot_10pct": ([f"{DEEPFOOL_REFERENCE}[linf]", DEEPFOOL_SOURCES], [f"{DEEPFOOL_REFERENCE}[linf]"]),
    "deepfool_overshoot_25pct": ([DEEPFOOL_SOURCES], [DEEPFOOL_SOURCES]),
    "pgd_step_5pct_long": ([f"{PGD_STEP_BY_STEP}[l2-1.0-0.1]", f"{PGD_STEP_BY_STEP}[linf-0.1-0.01]",
                            f"{PGD_TEN_STEPS}[l2-1.0-0.1]", f"{PGD_TEN_STEPS}[linf-0.1-0.01]"],
                           [f"{PGD_STEP_BY_STEP}[l2-1.0-0.1]", f"{PGD_STEP_BY_STEP}[linf-0.1-0.01]",
                            f"{PGD_TEN_STEPS}[l2-1.0-0.1]", f"{PGD_TEN_STEPS}[linf-0.1-0.01]"]),
    "art_autoattack_one_step": ([AUTOATTACK], [AUTOATTACK]),
}


def weaken(name: str) -> None:
    """Patch one attack in this process (called by the pytest plugin below, before the tests run)."""
    from shieldkit.attacks import PGD, DeepFool

    if name == "deepfool_no_projection":
        DeepFool.projections = 0
    elif name.startswith("deepfool_overshoot_"):
        original = DeepFool.__init__
        landing = {"deepfool_overshoot_10pct": 0.10, "deepfool_overshoot_25pct": 0.25}[name]

        @functools.wraps(original)  # the signature the registry reads stays the attack's
        def overshooting(self, *args, overshoot=0.02, **kwargs):
            original(self, *args, overshoot=landing, **kwargs)

        DeepFool.__init__ = overshooting
    elif name == "pgd_step_5pct_long":
        original_pgd = PGD.__init__

        @functools.wraps(original_pgd)
        def long_steps(self, *args, step_size=None, **kwargs):
            original_pgd(self, *args, step_size=None if step_size is None else 1.05 * step_size, **kwargs)

        PGD.__init__ = long_steps
    elif name == "art_autoattack_one_step":
        import shieldkit as sk

        original_create = sk.create_attack

        def one_step(name, **params):
            if name == "autoattack.art":
                params["steps"] = 1
            return original_create(name, **params)

        sk.create_attack = one_step
    else:
        raise ValueError(f"unknown weakening {name!r}")


def pytest_configure(config):  # this module as a pytest plugin (-p check_thresholds)
    if os.environ.get("SHIELDKIT_WEAKEN"):
        weaken(os.environ["SHIELDKIT_WEAKEN"])


def run_tests(tests: list[str], env: dict[str, str]) -> dict[str, str]:
    """Run ``tests`` in a fresh pytest process; each test's outcome (passed/failed/error)."""
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *tests]
    if env.get("SHIELDKIT_WEAKEN"):
        command[3:3] = ["-p", "check_thresholds"]
    full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "bench"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True)
    outcomes = {}
    for line in out.stdout.splitlines():
        match = re.match(r"^(PASSED|FAILED|ERROR) (\S+)", line)
        if match:
            outcomes[match.group(2)] = match.group(1).lower()
    for test in tests:
        outcomes.setdefault(test, "not run")
    if not outcomes or all(v == "not run" for v in outcomes.values()):
        print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("variants", "weakened"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", nargs="+", default=["1", "2"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    lines = ["# Thresholds of the four machine-sensitive tests: variants and weakened attacks", "",
             f"`python bench/check_thresholds.py` on {platform.machine()} ({platform.processor() or 'cpu'}).", "",
             "| run | test | outcome | expected |", "|---|---|---|---|"]
    unexpected = 0
    if args.only in (None, "variants"):
        for seed in args.seeds:
            for threads in args.threads:
                env = {"OMP_NUM_THREADS": threads, "SHIELDKIT_TEST_SEED": str(seed)}
                for test, outcome in run_tests(TESTS, env).items():
                    ok = outcome == "passed"
                    unexpected += not ok
                    lines.append(f"| seed {seed}, OMP_NUM_THREADS={threads} | `{test.split('::')[1]}` | {outcome} | "
                                 f"{'yes' if ok else '**no**'} |")
                    print(lines[-1], flush=True)
    if args.only in (None, "weakened"):
        for name, (tests, must_fail) in WEAKENED.items():
            for test, outcome in run_tests(tests, {"SHIELDKIT_WEAKEN": name, "OMP_NUM_THREADS": "2"}).items():
                ok = outcome == "failed" if test in must_fail else outcome == "passed"
                unexpected += not ok
                lines.append(f"| weakened: {name} | `{test.split('::')[1]}` | {outcome} | {'yes' if ok else '**no**'} |")
                print(lines[-1], flush=True)
    lines.append("")
    args.output.write_text("\n".join(lines))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
