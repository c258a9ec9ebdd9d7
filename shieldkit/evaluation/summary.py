"""From the rows of ``results.jsonl`` to the run's :class:`~shieldkit.evaluation.summaries.RunSummary`.

A pure function of data on disk: the rows and the run's manifest (``plan.json``,
:mod:`~shieldkit.evaluation.manifest`). So a resumed run and an uninterrupted one
summarise identically, and ``shieldkit report DIR`` rebuilds a summary with no
model loaded.
"""

from __future__ import annotations

from collections import defaultdict

from shieldkit.core.defense import ABSTAIN
from shieldkit.core.threat import format_eps, largest_distance
from shieldkit.evaluation import masking
from shieldkit.evaluation.intervals import (
    EXACT,
    EXACT_EXPECTED,
    clopper_pearson,
    expected_accuracy_interval,
)
from shieldkit.evaluation.manifest import DefenseManifest, Manifest
from shieldkit.evaluation.records import (
    MODES,
    STAGES,
    AttackRow,
    CertificateRow,
    CleanRow,
    DiagnosisRow,
    EffortRow,
    GradientRow,
    LargeEpsRow,
    RandomnessRow,
    Row,
    eps_key,
)
from shieldkit.evaluation.summaries import (
    AttackStats,
    BlackBoxExtra,
    CertifiedAtEps,
    CertifiedSummary,
    DefenseSummary,
    DetectorSummary,
    EpsSummary,
    ExampleRef,
    RunSetup,
    RunSummary,
    TimeSummary,
)

_STAGE_ORDER = {stage: i for i, stage in enumerate(STAGES)}


def summarize(rows: list[Row], manifest: Manifest) -> RunSummary:
    """The run's summary (what ``summary.json`` holds and the reports render).

    Args:
        rows: every row of the run (``results.jsonl``), in any order.
        manifest: the run's manifest (``plan.json``): defences, attacks, eps.
    """
    by_defense: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_defense[row.defense].append(row)
    attack_order = {attack.label: i for i, attack in enumerate(manifest.attacks)}
    defenses = [_defense_summary(defense, by_defense[defense.label], manifest, attack_order)
                for defense in manifest.defenses]
    attack_seconds = sum(d.seconds for d in defenses)
    full_seconds = sum(d.estimated_full_seconds for d in defenses)
    classes = manifest.setup.data.classes if manifest.setup is not None else max(manifest.labels, default=0) + 1
    return RunSummary(
        warnings=setup_warnings(defenses, classes, manifest.setup),
        config_hash=manifest.config_hash, n=manifest.n, data=manifest.data, norm=manifest.norm,
        eps=list(manifest.eps), cascade=manifest.cascade, seed=manifest.seed,
        attacks=list(manifest.attacks), setup=manifest.setup,
        defenses=defenses,
        time=TimeSummary(
            attack_seconds=attack_seconds, estimated_full_grid_seconds=full_seconds,
            saved_seconds=max(0.0, full_seconds - attack_seconds),
            saved_share=max(0.0, 1 - attack_seconds / full_seconds) if full_seconds > 0 else 0.0,
        ),
    )


def setup_warnings(defenses: list[DefenseSummary], classes: int, setup: RunSetup | None) -> list[str]:
    """The symptoms of a wrong setup a reader must see before any robust number: a clean accuracy under twice
    chance (or under the run's floor), and a model handed over in train mode."""
    warnings = []
    chance = 1 / max(classes, 1)
    floor = max(2 * chance, setup.clean_floor or 0.0) if setup is not None else 2 * chance
    for record in defenses:
        if record.clean_accuracy < floor:
            under = (f"under twice chance ({100 * 2 * chance:.1f}% for {classes} classes)"
                     if floor == 2 * chance else f"under the floor of {100 * floor:.1f}%")
            warnings.append(
                f"clean accuracy of {record.label} is {100 * record.clean_accuracy:.1f}%, {under}: check the data "
                "(the split, the class order, the image size), the normalisation (--normalize) and the weights "
                "(--weights) before reading any robust number")
    if setup is not None and setup.model.handed_over_in == "train":
        warnings.append("the model was handed over in train mode; it was evaluated in eval mode (call model.eval() "
                        "first if train mode was a mistake)")
    return warnings


def _defense_summary(plan: DefenseManifest, rows: list[Row], manifest: Manifest,
                     attack_order: dict[str, int]) -> DefenseSummary:
    n = manifest.n
    clean_rows = [r for r in rows if isinstance(r, CleanRow)]
    attack_rows = [r for r in rows if isinstance(r, AttackRow)]
    correct = {i for r in clean_rows for i in r.correct}
    clean_detected = {i for r in clean_rows for i in r.detected}
    record = DefenseSummary(**plan.identity(), n=n, clean_accuracy=len(correct) / n, eps={},
                            errors={mode: [] for mode in MODES}, clean_interval=clopper_pearson(len(correct), n),
                            interval_method=EXACT)
    points = DrawnPoints.of(clean_rows)
    if points is not None:  # a randomised model: expected accuracies over the judging draws
        record.judging_draws, record.interval_method = points.draws, EXACT_EXPECTED
        record.clean_accuracy, record.clean_majority = points.clean(n)
        record.clean_interval = expected_accuracy_interval(record.clean_accuracy * n, n)
    if plan.detector is not None:
        record.detector = DetectorSummary(plan.detector.fpr, len(clean_detected) / n, plan.detector.threshold)
    per_unit_cost: dict[tuple, list[float]] = defaultdict(list)
    for row in attack_rows:
        if row.attacked:
            per_unit_cost[(row.stage, row.attack)].append(row.seconds / len(row.attacked))
    seconds = estimated = 0.0
    gradient_free = {remedy.attack for remedy in plan.remedies if remedy.gradient_free}
    for eps in manifest.eps:
        fooled: dict[str, set[int]] = {stage: set() for stage in STAGES}
        adaptive_gradient_free: set[int] = set()
        misclassified, detected_adv = set(), set()
        attacks: dict[tuple, AttackStats] = {}
        first_fooled: dict[int, ExampleRef] = {}
        broken_by: dict[int, str] = {}
        eps_rows = [r for r in attack_rows if r.eps == eps]
        for row in sorted(eps_rows, key=lambda r: (r.chunk[0], _STAGE_ORDER[r.stage])):
            fooled[row.stage].update(row.fooled)
            if row.stage == "adaptive" and (row.access != "gradient" or row.attack in gradient_free):
                adaptive_gradient_free.update(row.fooled)
            for index in row.fooled:
                broken_by.setdefault(index, _broken_label(row))
            misclassified.update(row.misclassified)
            detected_adv.update(set(row.detected) & set(row.misclassified))
            stats = attacks.setdefault((row.stage, row.attack), AttackStats(row.stage, row.attack, row.name, row.access))
            stats.attacked += len(row.attacked)
            stats.fooled += len(row.fooled)
            stats.seconds += row.seconds
            stats.forwards += row.forwards
            stats.backwards += row.backwards
            stats.queries += row.queries
            if row.error:
                stats.errors += 1
                # black-box attacks belong to both modes' worst case; the other stages to their own
                for mode in MODES if row.stage == "blackbox" else (row.stage,):
                    record.errors[mode].append(f"{row.attack} ({row.stage}, eps={format_eps(eps)}): {row.error}")
            seconds += row.seconds
            estimated += _full_grid_cost(row, correct, per_unit_cost)
            if row.examples:
                for index in (i for i in row.fooled if i < manifest.examples):
                    first_fooled.setdefault(index, ExampleRef(row.stage, row.attack, row.examples))
        naive_fooled = fooled["naive"] | fooled["blackbox"]
        all_fooled = naive_fooled | fooled["adaptive"]
        # what the score-based and transfer remedies broke is black-box evidence, not white-box
        white = fooled["naive"] | (fooled["adaptive"] - adaptive_gradient_free)
        summary = EpsSummary(
            clean_correct=len(correct),
            naive=len(correct - naive_fooled) / n,
            adaptive=len(correct - all_fooled) / n,
            black_box_extra=BlackBoxExtra(naive=len(fooled["blackbox"] - fooled["naive"]),
                                          adaptive=len((fooled["blackbox"] | adaptive_gradient_free) - white)),
            attacks=sorted(attacks.values(), key=lambda a: (_STAGE_ORDER[a.stage], attack_order.get(a.attack, -1))),
            examples={str(k): v for k, v in sorted(first_fooled.items())},
            broken_by=_count_by_attack(broken_by, attacks),
        )
        for mode, stages in (("naive", ("naive", "blackbox")), ("adaptive", STAGES)):
            if points is None:
                summary.interval[mode] = clopper_pearson(round(summary.accuracy(mode) * n), n)
                continue
            expected, majority = points.robust(n, [r for r in eps_rows if r.stage in stages])
            setattr(summary, mode, expected)
            summary.interval[mode] = expected_accuracy_interval(expected * n, n)
            summary.majority = {**(summary.majority or {}), mode: majority}
        if plan.detector is not None:
            summary.detection_rate = len(detected_adv) / len(misclassified) if misclassified else None
            summary.classifier_only = len(correct - misclassified) / n
            summary.correct_or_detected = summary.adaptive
        record.eps[eps_key(eps)] = summary
    record.seconds = seconds
    record.estimated_full_seconds = max(estimated, seconds)
    record.diagnosis = next((r for r in rows if isinstance(r, DiagnosisRow)), None)
    certificates = [r for r in rows if isinstance(r, CertificateRow)]
    if certificates:
        record.certified = _certified_summary(plan, certificates, attack_rows, record, manifest)
    if manifest.checks:
        for mode in MODES:
            record.checks.extend(masking.check_flags(record, mode, _measurements(rows, mode, plan.same_as_naive)))
    return record


class DrawnPoints:
    """The points a randomised model was judged at, per sample, with the draws it survived (the expected-accuracy
    reduction; see :class:`~shieldkit.evaluation.adaptive.Judgement`).

    A sample's robust probability is the second-half share of its worst point, the worst being picked by the
    first-half share among its clean image and every adversarial image of the mode's attacks. The majority-vote
    figure counts a sample robust when the model is right on most draws at every one of those points.
    """

    def __init__(self, clean: dict[int, tuple[float, float, float]], draws: int):
        self.clean_points, self.draws = clean, draws

    @classmethod
    def of(cls, clean_rows: list[CleanRow]) -> DrawnPoints | None:
        """From the clean rows; ``None`` when the model was judged on one draw."""
        clean = {}
        for row in clean_rows:
            if row.selected is None:
                return None
            for offset, (selected, judged) in enumerate(zip(row.selected, row.judged)):
                clean[row.chunk[0] + offset] = _shares(selected, judged, row.draws)
        return cls(clean, max(r.draws for r in clean_rows)) if clean else None

    def clean(self, n: int) -> tuple[float, float]:
        """Expected and majority-vote clean accuracy."""
        shares = [point[2] for point in self.clean_points.values()]
        return sum(shares) / n, sum(share > 0.5 for share in shares) / n

    def robust(self, n: int, rows: list[AttackRow]) -> tuple[float, float]:
        """Expected and majority-vote robust accuracy over the adversarial points of ``rows``."""
        worst = dict(self.clean_points)
        majority = {i: point[2] > 0.5 for i, point in worst.items()}
        for row in rows:
            if row.selected is None:  # crashed: its samples count as robust (and the run is flagged)
                continue
            for index, selected, judged in zip(row.attacked, row.selected, row.judged):
                point = _shares(selected, judged, row.draws)
                if point[0] < worst[index][0]:
                    worst[index] = point
                majority[index] = majority[index] and point[2] > 0.5
        return sum(point[1] for point in worst.values()) / n, sum(majority.values()) / n


def _shares(selected: int, judged: int, draws: int) -> tuple[float, float, float]:
    """A point's share of survived draws: in the first half, the second, and all."""
    half = draws // 2
    return selected / half, judged / (draws - half), (selected + judged) / draws


def _broken_label(row: AttackRow | AttackStats) -> str:
    """An attack's name in the "attack that broke it" counts: adaptive runs of a suite attack say so."""
    if row.stage == "adaptive" and " via " not in row.attack:
        return f"{row.attack} (adaptive)"
    return row.attack


def _count_by_attack(broken_by: dict[int, str], attacks: dict[tuple, AttackStats]) -> dict[str, int]:
    """Samples per attack that broke them first, in the order the attacks ran (every attack listed, 0 included)."""
    ordered = sorted(attacks.values(), key=lambda a: _STAGE_ORDER[a.stage])
    counts = {_broken_label(stats): 0 for stats in ordered}
    for attack in broken_by.values():
        counts[attack] = counts.get(attack, 0) + 1
    return counts


def _certified_summary(plan: DefenseManifest, certificates: list[CertificateRow], attack_rows: list[AttackRow],
                       record: DefenseSummary, manifest: Manifest) -> CertifiedSummary:
    """Certified accuracy against radius, and at the radius each eps implies beside the attacks' numbers.

    A sample is certified at radius ``r`` when its certificate is correct (not abstained) and reaches ``r``.
    """
    n, labels, certifier = record.n, manifest.labels, plan.certifier
    radii, correct = [], []
    for row in certificates:
        for offset, (prediction, radius) in enumerate(zip(row.predictions, row.radii)):
            radii.append(radius)
            correct.append(prediction == labels[row.chunk[0] + offset])
    certified_at = lambda r: sum(ok and radius >= r for ok, radius in zip(correct, radii)) / n  # noqa: E731
    largest = max(radii, default=0.0)
    curve = [(r, certified_at(r)) for r in sorted({largest * i / 40 for i in range(41)})]
    at_eps = {}
    span = manifest.bounds[1] - manifest.bounds[0]
    for eps in manifest.eps:
        key = eps_key(eps)
        reach = largest_distance(eps, manifest.norm, certifier.norm, manifest.image_size, span)
        disproved = {mode: sorted({i for r in attack_rows if r.eps == eps and r.disproved
                                   and (mode == "adaptive" or r.stage != "adaptive") for i in r.disproved})
                     for mode in MODES}
        at_eps[key] = CertifiedAtEps(radius=reach, certified=None if reach is None else certified_at(reach),
                                     naive=record.eps[key].naive, adaptive=record.eps[key].adaptive,
                                     disproved=disproved)
    abstained = sum(p == ABSTAIN for row in certificates for p in row.predictions) / n
    return CertifiedSummary(
        norm=certifier.norm, params=certifier.params, abstained=abstained,
        forwards=sum(r.forwards for r in certificates), queries=sum(r.queries for r in certificates),
        seconds=sum(r.seconds for r in certificates), curve=curve, at_eps=at_eps)


def _measurements(rows: list[Row], mode: str, same_as_naive: bool) -> masking.Measurements:
    """The measurement rows for ``mode``; with no adaptive view, the adaptive mode attacks what the naive one does."""
    measured_mode = "naive" if same_as_naive else mode
    found = masking.Measurements()
    effort: dict[str, list[EffortRow]] = {}
    for row in rows:
        if isinstance(row, RandomnessRow):
            found.randomness = row
        elif isinstance(row, GradientRow) and row.mode == measured_mode:
            found.gradients = row
        elif isinstance(row, LargeEpsRow) and row.mode == measured_mode:
            found.large_eps = row
        elif isinstance(row, EffortRow):
            effort.setdefault(row.mode, []).append(row)
    # an opaque model's adaptive mode has its own rows (through the remedies' views) where it has remedies
    found.effort = effort.get(mode) or (effort.get("naive", []) if same_as_naive else [])
    return found


def _full_grid_cost(row: AttackRow, correct: set[int], per_unit_cost: dict[tuple, list[float]]) -> float:
    """What this unit would have cost on every clean-correct sample of its chunk (the full grid)."""
    start, end = row.chunk
    candidates = sum(1 for i in correct if start <= i < end)
    if row.attacked:
        return row.seconds * candidates / len(row.attacked)
    costs = per_unit_cost.get((row.stage, row.attack))
    return (sum(costs) / len(costs)) * candidates if costs else 0.0
