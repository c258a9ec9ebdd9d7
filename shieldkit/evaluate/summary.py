"""From the rows of ``results.jsonl`` to ``summary.json``: worst-case accuracies, costs, flags.

Everything here is computed from the rows alone (plus the run's plan), so a
resumed run and an uninterrupted one summarise identically.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from shieldkit.evaluate import masking

_STAGE_ORDER = {"naive": 0, "blackbox": 1, "adaptive": 2}


def summarize(rows: list[dict[str, Any]], runner: Any, config_hash: str) -> dict[str, Any]:
    """The run's summary (what ``summary.json`` holds and the reports render).

    Args:
        rows: every row of the run.
        runner: the :class:`~shieldkit.evaluate.runner.Runner` (its plan: defences, attacks, eps).
        config_hash: the configuration's hash.
    """
    config = runner.config
    n = len(runner.data)
    by_defense: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_defense[row["defense"]].append(row)
    attack_order = {entry.label: i for i, entry in enumerate(runner.white + runner.black)}
    defenses = []
    for plan, entry in zip(runner.plans, runner.defenses):
        record = _defense_summary(plan, entry, by_defense[plan.label], config, n, attack_order)
        defenses.append(record)
    attack_seconds = sum(d["seconds"] for d in defenses)
    full_seconds = sum(d["estimated_full_seconds"] for d in defenses)
    return {
        "config_hash": config_hash,
        "n": n,
        "data": runner.data.name,
        "norm": config.norm,
        "eps": list(config.eps),
        "cascade": config.cascade,
        "seed": config.seed,
        "attacks": [{"label": a.label, "name": a.name, "access": a.access} for a in runner.white + runner.black],
        "defenses": defenses,
        "time": {
            "attack_seconds": attack_seconds,
            "estimated_full_grid_seconds": full_seconds,
            "saved_seconds": max(0.0, full_seconds - attack_seconds),
            "saved_share": max(0.0, 1 - attack_seconds / full_seconds) if full_seconds > 0 else 0.0,
        },
    }


def _defense_summary(plan, entry, rows, config, n: int, attack_order: dict[str, int]) -> dict[str, Any]:
    clean_rows = [r for r in rows if r["type"] == "clean"]
    attack_rows = [r for r in rows if r["type"] == "attack"]
    check_rows = {r["check"]: r for r in rows if r["type"] == "check"}
    correct = {i for r in clean_rows for i in r["correct"]}
    clean_detected = {i for r in clean_rows for i in r["detected"]}
    record: dict[str, Any] = {
        "label": plan.label,
        "name": entry.name,
        "kind": plan.kind,
        "view": plan.view_description,
        "adaptive_stage": plan.has_adaptive_stage,
        "randomized": plan.randomized,
        "eot": plan.eot,
        "n": n,
        "clean_accuracy": len(correct) / n,
        "eps": {},
        "errors": {"naive": [], "adaptive": []},
    }
    if plan.detector is not None:
        record["detector"] = {"fpr_fitted": getattr(plan.detector, "fpr", config.fpr),
                              "fpr_measured": len(clean_detected) / n, "threshold": plan.detector.threshold}
    per_unit_cost: dict[tuple, list[float]] = defaultdict(list)
    for row in attack_rows:
        if row["attacked"]:
            per_unit_cost[(row["stage"], row["attack"])].append(row["seconds"] / len(row["attacked"]))
    seconds = estimated = 0.0
    for eps in config.eps:
        eps_rows = [r for r in attack_rows if r["eps"] == eps]
        fooled = {stage: set() for stage in _STAGE_ORDER}
        misclassified, detected_adv = set(), set()
        attacks: dict[tuple, dict[str, Any]] = {}
        first_fooled: dict[int, dict[str, Any]] = {}
        for row in sorted(eps_rows, key=lambda r: (r["chunk"][0], _STAGE_ORDER[r["stage"]])):
            fooled[row["stage"]].update(row["fooled"])
            misclassified.update(row["misclassified"])
            detected_adv.update(set(row["detected"]) & set(row["misclassified"]))
            stats = attacks.setdefault((row["stage"], row["attack"]), {
                "stage": row["stage"], "attack": row["attack"], "name": row["name"], "access": row["access"],
                "attacked": 0, "fooled": 0, "seconds": 0.0, "forwards": 0, "backwards": 0, "queries": 0, "errors": 0})
            stats["attacked"] += len(row["attacked"])
            stats["fooled"] += len(row["fooled"])
            for key in ("seconds", "forwards", "backwards", "queries"):
                stats[key] += row[key]
            if row["error"]:
                stats["errors"] += 1
                for mode in ("naive", "adaptive") if row["stage"] == "blackbox" else (
                        "naive" if row["stage"] == "naive" else "adaptive",):
                    record["errors"][mode].append(f"{row['attack']} ({row['stage']}, eps={eps:g}): {row['error']}")
            seconds += row["seconds"]
            estimated += _full_grid_cost(row, correct, per_unit_cost)
            if row.get("examples"):
                for index in (i for i in row["fooled"] if i < config.examples):
                    first_fooled.setdefault(index, {"stage": row["stage"], "attack": row["attack"],
                                                    "file": row["examples"]})
        naive_fooled = fooled["naive"] | fooled["blackbox"]
        all_fooled = naive_fooled | fooled["adaptive"]
        white = fooled["naive"] | fooled["adaptive"]
        eps_record = {
            "clean_correct": len(correct),
            "naive": len(correct - naive_fooled) / n,
            "adaptive": len(correct - all_fooled) / n,
            "black_box_extra": {"naive": len(fooled["blackbox"] - fooled["naive"]),
                                "adaptive": len(fooled["blackbox"] - white)},
            "attacks": sorted(attacks.values(), key=lambda a: (_STAGE_ORDER[a["stage"]], attack_order.get(a["attack"], -1))),
            "examples": {str(k): v for k, v in sorted(first_fooled.items())},
        }
        if plan.detector is not None:
            eps_record["detection_rate"] = len(detected_adv) / len(misclassified) if misclassified else None
            eps_record["classifier_only"] = len(correct - misclassified) / n
            eps_record["correct_or_detected"] = eps_record["adaptive"]
        record["eps"][_eps_key(eps)] = eps_record
    record["seconds"] = seconds
    record["estimated_full_seconds"] = max(estimated, seconds)
    for mode in ("naive", "adaptive"):
        if mode == "adaptive" and plan.view is None:
            rows_for_mode = {**check_rows, **{k.replace("|naive", "|adaptive"): v for k, v in check_rows.items()
                                              if k.endswith("|naive")}}
        else:
            rows_for_mode = check_rows
        checks = masking.check_flags(record, mode, rows_for_mode) if config.checks else []
        record.setdefault("checks", []).extend(checks)
    record["flags"] = {mode: [c for c in record["checks"] if c["mode"] == mode and c["passed"] is False]
                       for mode in ("naive", "adaptive")}
    return record


def _full_grid_cost(row: dict[str, Any], correct: set[int], per_unit_cost: dict[tuple, list[float]]) -> float:
    """What this unit would have cost on every clean-correct sample of its chunk (the full grid)."""
    start, end = row["chunk"]
    candidates = sum(1 for i in correct if start <= i < end)
    if row["attacked"]:
        return row["seconds"] * candidates / len(row["attacked"])
    costs = per_unit_cost.get((row["stage"], row["attack"]))
    return (sum(costs) / len(costs)) * candidates if costs else 0.0


def _eps_key(eps: float) -> str:
    return f"{eps:g}"
