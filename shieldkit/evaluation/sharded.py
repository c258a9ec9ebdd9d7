"""One evaluation across the ranks of a process group: each attacks its chunks, rank 0 writes the run.

Under ``torchrun`` (or any initialised process group of more than one process)
:meth:`Runner.run <shieldkit.evaluation.runner.Runner.run>` comes here. The
chunks of ``batch_size`` samples are fixed by the data alone and rank ``r`` of
``w`` takes every ``w``-th one; every unit is seeded from its own identity
(defence, stage, attack, epsilon, chunk start), never from the rank, so the
per-sample outcomes are exactly those of a single-process run.

Each rank writes its rows durably to ``out/shards/rank-<r>/results.jsonl`` as
they finish. ``--resume`` continues each shard where it stopped, and also takes
the rows every other shard (or an earlier merged run) already finished, so a
resume with another number of processes recomputes nothing that is done. At the
end the rows are gathered on rank 0, which writes the one ``results.jsonl`` (in
the order a single process writes it), ``summary.json`` and the reports; every
rank returns the same :class:`~shieldkit.evaluation.report.Report`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from shieldkit.core.errors import InvalidParameterError
from shieldkit.evaluation.config import digest
from shieldkit.evaluation.examples import read_example_files, write_example_files
from shieldkit.evaluation.manifest import Manifest
from shieldkit.evaluation.records import AttackRow, Row, row_from_json
from shieldkit.evaluation.results import (
    CONFIG,
    RESULTS,
    RUN_OUTPUTS,
    ResultsStore,
    RunLock,
    environment_record,
    row_line,
    write_config,
    write_json,
)
from shieldkit.infra import distributed

logger = logging.getLogger(__name__)

SHARDS = "shards"


def shard_dir(out_dir: Path, rank: int) -> Path:
    """Where rank ``rank`` keeps its own rows."""
    return Path(out_dir) / SHARDS / f"rank-{rank}"


def run_sharded(runner):
    """Run ``runner``'s evaluation on this rank's chunks; rank 0 merges; returns the Report on every rank.

    Rank 0 holds the output folder's :class:`~shieldkit.evaluation.results.RunLock` for the whole run (the
    ranks are one run); when another run holds it, every rank refuses with the same message.
    """
    lock = RunLock(runner.out_dir)
    refusal = None
    if runner.shard[0] == 0:
        try:
            lock.__enter__()
        except InvalidParameterError as error:
            refusal = str(error)
    refusal = distributed.broadcast_object(refusal)
    if refusal is not None:
        raise InvalidParameterError(refusal)
    try:
        return _run_locked(runner)
    finally:
        lock.__exit__(None, None, None)


def _run_locked(runner):
    from shieldkit.evaluation.report import Report, reduce_run

    rank, world = runner.shard
    out = runner.out_dir
    identity = runner.identity()
    config_hash = digest(identity)
    if rank == 0 and not runner.resume:
        _clear(out)
    distributed.barrier()  # nobody writes its shard before a fresh run's old outputs are gone
    shard_dir(out, rank).mkdir(parents=True, exist_ok=True)
    store = ResultsStore(shard_dir(out, rank), identity, config_hash, resume=runner.resume)
    if runner.resume:
        taken = _absorb_finished_rows(store, out, config_hash)
        if store.resumed or taken:
            logger.info("rank %d resuming: %d rows of its own, %d from other shards", rank, store.resumed, taken)
    if rank == 0:
        write_json(out / "environment.json", {**environment_record(runner.config.seed, runner.device),
                                              "world_size": world, "backend": _backend()})
    try:
        manifest = runner.execute(store, config_hash)
    finally:
        store.close()
    rows = list(store)
    examples = [row.examples for row in rows if isinstance(row, AttackRow) and row.examples]
    gathered = distributed.gather_objects((rows, read_example_files(out, examples) if rank != 0 else {}))
    summary = None
    if rank == 0:
        merged = merge_rows([part[0] for part in gathered], manifest)
        for part in gathered[1:]:
            write_example_files(out, part[1])
        _write_results(out, merged, identity, config_hash)
        summary = reduce_run(out, merged, manifest, quiet=True)
    summary = distributed.broadcast_object(summary)
    return Report(out, summary)


def merge_rows(parts: list[list[Row]], manifest: Manifest) -> list[Row]:
    """The rows of every rank, one per unit, in the order a single process writes them.

    A single process first diagnoses every defence (its diagnosis rows, in the
    defences' order), then goes defence by defence, epsilon by epsilon, chunk by
    chunk (a chunk's clean row first), then the defence's checks; within a chunk
    the order is the cascade's, which the rank that ran the chunk kept.
    """
    defense_index = {defense.label: i for i, defense in enumerate(manifest.defenses)}
    eps_index = {float(eps): i for i, eps in enumerate(manifest.eps)}
    unique: dict[str, tuple] = {}
    for part in parts:
        for position, row in enumerate(part):
            if row.key in unique:
                continue
            is_check = row.type == "check"
            chunk_start = row.chunk[0] if hasattr(row, "chunk") else 0
            eps = eps_index.get(float(row.eps), 0) if isinstance(row, AttackRow) else 0
            order = (row.type != "diagnosis", defense_index.get(row.defense, len(defense_index)), is_check, eps,
                     chunk_start, position)
            unique[row.key] = (order, row)
    return [row for _, row in sorted(unique.values(), key=lambda item: item[0])]


def _clear(out: Path) -> None:
    for name in (*RUN_OUTPUTS, SHARDS):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _absorb_finished_rows(store: ResultsStore, out: Path, config_hash: str) -> int:
    """Take the rows other shards (or a merged earlier run) finished under the same configuration."""
    sources = [out] + sorted(p for p in (out / SHARDS).glob("rank-*") if p != store.out_dir)
    taken = 0
    for folder in sources:
        try:
            if json.loads((folder / CONFIG).read_text()).get("hash") != config_hash:
                if folder == out:
                    raise InvalidParameterError(
                        f"--resume: the configuration differs from the run in {str(out)!r}; "
                        "use another --out or run without --resume")
                continue
            lines = (folder / RESULTS).read_text(encoding="utf-8").splitlines(keepends=True)
        except (OSError, ValueError):
            continue
        for line in lines:
            if not line.endswith("\n"):
                break  # a row cut short by a kill
            try:
                row = row_from_json(json.loads(line))
            except (ValueError, TypeError, AttributeError):
                break
            if row.key not in store.rows:
                store.rows[row.key] = row
                taken += 1
    return taken


def _write_results(out: Path, rows: list[Row], identity: dict[str, Any], config_hash: str) -> None:
    write_config(out, identity, config_hash)
    temporary = out / (RESULTS + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(row_line(row))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, out / RESULTS)


def _backend() -> str | None:
    import torch.distributed as dist

    return dist.get_backend() if distributed.initialized() else None
