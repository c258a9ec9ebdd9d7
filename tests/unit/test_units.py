"""The plan of units (shieldkit/evaluation/units.py): its order, its keys and seeds, and sharding as a filter."""

from __future__ import annotations

import pytest

from shieldkit.attacks import FGSM, PGD, Noise
from shieldkit.evaluation.suite import AttackEntry
from shieldkit.evaluation.units import (
    STAGES,
    AttackOnTarget,
    chunk_ranges,
    plan_units,
    rank_chunks,
    shard_units,
)


def attack(label: str, cls=PGD, role: str = "deployed") -> AttackOnTarget:
    return AttackOnTarget(AttackEntry(label, f"{label}.native", cls, {}), role)


NAIVE = [attack("fgsm", FGSM), attack("pgd")]
BLACKBOX = [attack("noise", Noise)]
ADAPTIVE = [attack("pgd", role="view"), attack("pgd via eot", role="remedy:eot")]
EPS = (0.1, 0.3)


def test_chunks_are_fixed_by_the_sample_count_alone():
    assert chunk_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_ranges(8, 4) == [(0, 4), (4, 8)]
    assert chunk_ranges(3, 100) == [(0, 3)]


def test_units_run_per_eps_per_chunk_in_stage_order():
    chunks = chunk_ranges(10, 4)
    units = plan_units("jpeg", NAIVE, BLACKBOX, ADAPTIVE, EPS, chunks)
    assert len(units) == len(EPS) * len(chunks) * (len(NAIVE) + len(BLACKBOX) + len(ADAPTIVE))
    first = units[:5]
    assert [(u.stage, u.attack.entry.label, u.attack.role) for u in first] == [
        ("naive", "fgsm", "deployed"), ("naive", "pgd", "deployed"), ("blackbox", "noise", "deployed"),
        ("adaptive", "pgd", "view"), ("adaptive", "pgd via eot", "remedy:eot")]
    assert {(u.eps, u.chunk) for u in first} == {(0.1, (0, 4))}
    assert [u.chunk for u in units[5:10]] == [(4, 8)] * 5
    assert units[-1].eps == 0.3 and units[-1].chunk == (8, 10)
    assert all(STAGES.index(a.stage) <= STAGES.index(b.stage) for a, b in zip(units, units[1:])
               if (a.eps, a.chunk) == (b.eps, b.chunk))


def test_each_unit_has_its_own_key_and_a_seed_from_its_identity_only():
    units = plan_units("jpeg", NAIVE, BLACKBOX, ADAPTIVE, EPS, chunk_ranges(10, 4))
    assert len({u.key for u in units}) == len(units)
    assert units[0].key == "attack|jpeg|0.1|naive|fgsm|0"
    seeds = [u.seed(0) for u in units]
    assert len(set(seeds)) == len(units)
    # the same unit planned again, alone or in another suite, gets the same seed; another run seed another one
    again = plan_units("jpeg", NAIVE[:1], [], [], EPS[:1], chunk_ranges(10, 4)[:1])[0]
    assert again == units[0] and again.seed(0) == units[0].seed(0) and again.seed(1) != units[0].seed(0)
    with pytest.raises(AttributeError):
        units[0].eps = 0.2  # frozen: a plan is computed once


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_sharding_is_a_filter_every_unit_runs_on_exactly_one_rank(world):
    chunks = chunk_ranges(10, 2)
    units = plan_units("none", NAIVE, BLACKBOX, ADAPTIVE, EPS, chunks)
    shards = [shard_units(units, chunks, rank, world) for rank in range(world)]
    assert sorted(u.key for shard in shards for u in shard) == sorted(u.key for u in units)
    for rank, shard in enumerate(shards):
        assert [u for u in units if u in shard] == shard  # the plan's order is kept
        assert {u.chunk for u in shard} <= set(rank_chunks(chunks, rank, world))
        assert rank_chunks(chunks, rank, world) == chunks[rank::world]
    assert rank_chunks(chunks, 0, world)[0] == chunks[0]  # rank 0 owns the first chunk (the checks run there)


def test_batch_rows_reaches_only_an_attack_that_takes_it_and_was_not_given_one():
    from shieldkit.attacks import APGDTargeted

    given = AttackEntry("apgd_t", "apgd_t.native", APGDTargeted, {"steps": 5}).build(0.1, "linf", (0, 1), 0,
                                                                                   batch_rows=64)
    assert given.batch_rows == 64
    assert AttackEntry("apgd_t", "apgd_t.native", APGDTargeted, {}).build(0.1, "linf", (0, 1), 0).batch_rows is None
    kept = AttackEntry("apgd_t", "apgd_t.native", APGDTargeted, {"batch_rows": 8}).build(0.1, "linf", (0, 1), 0,
                                                                                       batch_rows=64)
    assert kept.batch_rows == 8
    plain = AttackEntry("pgd", "pgd.native", PGD, {}).build(0.1, "linf", (0, 1), 0, batch_rows=64)
    assert not hasattr(plain, "batch_rows")
