"""The evaluation runner: defences x epsilons x attacks, cascaded, adaptive, resumable.

Work is split into units: one attack, at one epsilon, against one defence, on one
fixed range of sample indices (a chunk of ``batch_size`` samples). Each unit is
seeded from ``(seed, defence, stage, attack, eps, chunk start)`` only, so its
outcome does not depend on the order in which units run, on what ran before a
resume, or (later) on which process of a distributed run takes the chunk.

Per chunk and epsilon the stages are:

1. ``naive``: the white-box (gradient) attacks on the deployed model, cascaded:
   each attacks only the samples all earlier ones left robust.
2. ``blackbox``: score/decision-based and noise attacks on what stage 1 left.
3. ``adaptive``: the defence's own adaptive attacks, then the white-box attacks
   on the adaptive view (BPDA/EOT, see :mod:`~shieldkit.evaluation.adaptive`), on
   what stage 1 left (so their results on samples stage 2 fooled are known too).

Naive robust accuracy is the worst case over stages 1-2; adaptive robust accuracy
the worst case over all three, per sample (AutoAttack-style).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shieldkit import distributed
from shieldkit.component import component_params, jsonable
from shieldkit.data.imagedata import ImageData
from shieldkit.defense import DetectorDefense, TrainerDefense
from shieldkit.diagnosis import Diagnosis, diagnose
from shieldkit.errors import InvalidInputError, InvalidModelError, InvalidParameterError
from shieldkit.escalation import GRADIENT_FREE_REMEDIES, Remedy, plan_remedies
from shieldkit.evaluation import masking
from shieldkit.evaluation.adaptive import DefensePlan, plan_defense
from shieldkit.evaluation.config import EvalConfig, check_eps, check_scalars, digest
from shieldkit.evaluation.examples import save_clean_examples, save_examples
from shieldkit.evaluation.manifest import (
    CertifierManifest,
    DefenseManifest,
    DetectorManifest,
    Manifest,
    RemedyManifest,
    write_manifest,
)
from shieldkit.evaluation.presets import REMEDY_ATTACK
from shieldkit.evaluation.records import (
    AttackRow,
    CertificateRow,
    CleanRow,
    DiagnosisRow,
    EffortRow,
    LargeEpsRow,
    RemedyNote,
    SuiteAttack,
)
from shieldkit.evaluation.results import (
    DiskFullError,
    ResultsStore,
    RunLock,
    check_writable,
    environment_record,
    is_disk_full,
    write_json,
)
from shieldkit.evaluation.suite import (
    AttackEntry,
    DefenseEntry,
    Suite,
    effort_attack,
    fit_options,
    resolve_attacks,
    resolve_suite,
    spec_records,
    strongest_white_box,
)
from shieldkit.guard import ModelStateGuard
from shieldkit.models.files import load_state_dict_file, save_model
from shieldkit.progress import Progress
from shieldkit.registry import get_registry
from shieldkit.threat import largest_distance
from shieldkit.validation import check_logits, model_device

logger = logging.getLogger(__name__)

#: samples the diagnosis probes (the first of the evaluation set), and that a remedy's surrogate is distilled on
DIAGNOSIS_SAMPLES = 64
REMEDY_SAMPLES = 256


def unit_seed(seed: int, *parts: Any) -> int:
    """A seed for one unit of work from the run's seed and the unit's identity (not its rank or order)."""
    text = json.dumps([seed, *parts], default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def chunk_ranges(n: int, size: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """Fixed sample ranges ``[start, end)``; rank ``r`` of ``world`` takes every ``world``-th one."""
    ranges = [(start, min(start + size, n)) for start in range(0, n, size)]
    return ranges[rank::world]


def model_digest(model: nn.Module) -> str:
    """A hash of a model's parameters and buffers (a changed model refuses to resume)."""
    hasher = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        hasher.update(name.encode())
        hasher.update(str(tuple(tensor.shape)).encode())
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def tensor_digest(*tensors: Tensor) -> str:
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def as_image_data(data: Any, what: str) -> ImageData:
    if isinstance(data, ImageData):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        try:
            return ImageData(data[0], data[1], name="custom")
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"{what}: {error}") from None
    raise InvalidInputError(f"{what}: expected ImageData or an (x, y) pair of tensors, got {type(data).__name__}")


class Runner:
    """Runs one evaluation; construction validates everything, :meth:`run` computes.

    Args:
        config: the run's settings.
        model: the classifier (pixel-space images in ``config.bounds`` to logits).
        data: the evaluation data.
        train_data: data to fit trainer defences and detectors on.
        quiet: no progress bars.
        resume: continue the run in ``config.out``.
        attacks, defenses: override ``config.attacks``/``config.defenses`` with
            objects (``Attack``/``Defense`` instances) as well as names.
        suite: the attacks and defences already resolved (:func:`~shieldkit.evaluation.suite.resolve_suite`,
            as the CLI does before loading data); then ``attacks``/``defenses`` are not given.
        shard: ``(rank, world)``: attack only this rank's chunks. ``None`` (the default):
            under an initialised process group of several processes, this process's
            rank and the world size, and :meth:`run` gathers every rank's rows on rank 0
            (:mod:`~shieldkit.evaluation.sharded`); otherwise the whole data set.
    """

    def __init__(self, config: EvalConfig, model: nn.Module, data: Any, *, train_data: Any = None,
                 quiet: bool = False, resume: bool = False, attacks: list | None = None,
                 defenses: list | None = None, shard: tuple[int, int] | None = None, suite: Suite | None = None):
        check_scalars(config)
        self.config = config
        self.resume = resume
        self.sharded = shard is None and distributed.active()
        self.shard = distributed.shard() if self.sharded else (shard or (0, 1))
        if not isinstance(model, nn.Module):
            raise InvalidModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.device = model_device(model)
        data = as_image_data(data, "data")
        if len(data) == 0:
            raise InvalidInputError("data: the evaluation set is empty (0 samples)")
        image_size = int(data.x[0].numel())
        check_eps(config.eps, config.norm, config.bounds, image_size)
        if config.n is not None and config.n > len(data):
            raise InvalidParameterError(f"n={config.n} is larger than the {len(data)} samples of the data")
        self.data = self._select(data, config.n, config.seed)
        if suite is None:
            suite = resolve_suite(attacks if attacks is not None else config.attacks,
                                  defenses if defenses is not None else config.defenses, config)
        elif attacks is not None or defenses is not None:
            raise InvalidParameterError("Runner: give either suite= or attacks=/defenses=, not both")
        self.suite = suite
        self.attacks, self.defenses = suite.attacks, suite.defenses
        needs_training = [d.label for d in self.defenses if d.kind == "trainer" or (
            d.kind == "detector" and getattr(d.instance, "threshold", None) is None)]
        self.train_data = as_image_data(train_data, "train_data") if train_data is not None else None
        if needs_training and self.train_data is None:
            raise InvalidParameterError(
                f"defenses {', '.join(needs_training)} must be fitted first: pass train_data= (the CLI uses the "
                "data set's train split)"
            )
        self._check_model_output()
        self.out_dir = check_writable(config.out)
        self.white, self.black = suite.white_box, suite.black_box
        self.chunks = chunk_ranges(len(self.data), config.batch_size, *self.shard)
        self._adaptive_cache: dict[str, list[AttackEntry]] = {}
        self.quiet = quiet or self.shard[0] != 0  # one progress bar per run, rank 0's
        #: set by :meth:`execute`: the rows' store, the prepared defences and the current progress bar
        self.store: ResultsStore | None = None
        self.plans: list[DefensePlan] = []
        self.bar: Progress | None = None

    # ------------------------------------------------------------- setup

    @staticmethod
    def _select(data: ImageData, n: int | None, seed: int) -> ImageData:
        if n is None or n == len(data):
            return data
        generator = torch.Generator().manual_seed(int(seed))
        indices = torch.randperm(len(data), generator=generator)[:n].sort().values
        return data[indices]

    def _check_model_output(self) -> None:
        x = self.data.x[:2].to(self.device)
        with ModelStateGuard(self.model), torch.no_grad():
            logits = check_logits(self.model(x), x.shape[0])
        largest = int(self.data.y.max())
        if logits.shape[1] <= largest:
            raise InvalidModelError(f"model has {logits.shape[1]} outputs but the data has label {largest}")

    def identity(self) -> dict[str, Any]:
        attacks, defenses = spec_records(self.attacks, self.defenses)
        identity = self.config.identity()
        identity.update(attacks=attacks, defenses=defenses, model_digest=model_digest(self.model),
                        data_digest=tensor_digest(self.data.x, self.data.y), n=len(self.data))
        if self.train_data is not None:
            identity["train_data_digest"] = tensor_digest(self.train_data.x[:2000], self.train_data.y[:2000])
        return json.loads(json.dumps(identity, default=str))

    # --------------------------------------------------------------- run

    def run(self):
        """Compute every missing unit, then write summary.json and the reports; returns a Report."""
        if self.sharded:
            from shieldkit.evaluation.sharded import run_sharded

            return run_sharded(self)
        from shieldkit.evaluation.report import Report, reduce_run

        identity = self.identity()
        config_hash = digest(identity)
        store = None
        with RunLock(self.out_dir):  # before anything in the folder is read, cleared or written
            try:
                store = ResultsStore(self.out_dir, identity, config_hash, resume=self.resume)
                write_json(self.out_dir / "environment.json", environment_record(self.config.seed, self.device))
                if store.resumed:
                    logger.info("resuming %s: %d units already done", self.out_dir, store.resumed)
                try:
                    manifest = self.execute(store, config_hash)
                finally:
                    store.close()
                summary = reduce_run(self.out_dir, list(store), manifest, quiet=self.quiet)
            except OSError as error:
                if is_disk_full(error):  # one line for the user, not torch's or json's traceback
                    raise DiskFullError(self.out_dir, len(store.rows) if store else 0) from error
                raise
        return Report(self.out_dir, summary)

    def execute(self, store: ResultsStore, config_hash: str) -> Manifest:
        """Prepare every defence (fit, diagnose, choose remedies), write the manifest, then run this shard's
        units into ``store``; returns the manifest.

        Under a process group rank 0 prepares first (it fits and caches trainers; the others load them), and
        only rank 0 writes ``plan.json`` and the clean example images.
        """
        self.store = store
        with ModelStateGuard(self.model):
            with distributed.rank_zero_first(), distributed.local():
                self.plans = [self._prepare(entry) for entry in self.defenses]
            manifest = self.manifest(config_hash)
            if self.shard[0] == 0:
                write_manifest(self.out_dir, manifest)
                first = min(self.config.examples, len(self.data))
                save_clean_examples(self.out_dir, self.data.x[:first], self.data.y[:first])
            for plan in self.plans:
                self._evaluate_defense(plan)
        return manifest

    def manifest(self, config_hash: str) -> Manifest:
        """What the rows mean (``plan.json``), from the prepared plans."""
        config = self.config
        return Manifest(
            config_hash=config_hash, data=self.data.name, n=len(self.data), image_size=int(self.data.x[0].numel()),
            labels=self.data.y.tolist(), norm=config.norm, eps=list(config.eps), bounds=tuple(config.bounds),
            cascade=config.cascade, seed=config.seed, checks=config.checks, examples=config.examples,
            attacks=[SuiteAttack(a.label, a.name, a.access) for a in self.white + self.black],
            defenses=[self._defense_manifest(plan, entry) for plan, entry in zip(self.plans, self.defenses)])

    def _defense_manifest(self, plan: DefensePlan, entry: DefenseEntry) -> DefenseManifest:
        record = DefenseManifest(
            label=plan.label, name=entry.name, kind=plan.kind, view=plan.view_description,
            adaptive_stage=plan.has_adaptive_stage, randomized=plan.randomized,
            # EOT draws: the defence's own, or those of an escalation remedy for a randomised opaque model
            eot=max([plan.eot, *(remedy.settings.draws for remedy, _ in plan.remedies)]),
            same_as_naive=plan.view is None and not plan.remedies,
            remedies=[RemedyManifest(remedy.name, label, remedy.name in GRADIENT_FREE_REMEDIES)
                      for remedy, label in plan.remedies])
        if plan.detector is not None:
            threshold = plan.detector.threshold
            record.detector = DetectorManifest(float(getattr(plan.detector, "fpr", self.config.fpr)),
                                               None if threshold is None else float(threshold))
        if plan.defense is not None and plan.defense.certifies is not None:
            record.certifier = CertifierManifest(plan.defense.certifies, jsonable(plan.defense.get_params()))
        return record

    def _prepare(self, entry: DefenseEntry) -> DefensePlan:
        defense = entry.build(unit_seed(self.config.seed, "defense", entry.label))
        model = self.model
        if isinstance(defense, TrainerDefense):
            model = self._fit_trainer(entry, defense)
        elif isinstance(defense, DetectorDefense) and (entry.instance is None or defense.threshold is None):
            fpr = entry.fit.get("fpr", self.config.fpr)
            clean = self.train_data.subset(min(1000, len(self.train_data)), seed=self.config.seed).x.to(self.device)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(unit_seed(self.config.seed, "fit", entry.label))
                defense.fit(self.model, clean, fpr=fpr)
        plan = plan_defense(entry.label, defense, model, eot=self.config.eot, adaptive=self.config.adaptive,
                            norm=self.config.norm)
        self._diagnose(plan)
        return plan

    # --------------------------------------------------- diagnosis and escalation

    def _diagnose(self, plan: DefensePlan) -> DiagnosisRow:
        """Diagnose the attack target before attacking it, and choose the remedies (kept in the results)."""
        key = f"diagnosis|{plan.label}"
        row = self.store.get(key)
        recorded = row is not None
        if not recorded:
            count = min(len(self.data), DIAGNOSIS_SAMPLES)
            x, y = self.data.x[:count].to(self.device), self.data.y[:count].to(self.device)
            seed = unit_seed(self.config.seed, key)
            with plan.seeded(seed):
                found = diagnose(plan.attack_target, x, y, bounds=self.config.bounds, seed=seed)
            row = DiagnosisRow(key=key, defense=plan.label, target="deployed" if plan.view is None else "adaptive view",
                               diagnosis=found)
        plan.remedies = self._remedies(plan, row.diagnosis)  # the same on a resume: chosen from the row alone
        row.remedies = [RemedyNote(remedy.name, remedy.reason, label) for remedy, label in plan.remedies]
        if not recorded and self.shard[0] == 0:  # every rank plans; rank 0 records
            self.store.append(row)
        if row.diagnosis.flags:
            logger.info("%s: diagnosis found %s; remedies: %s", plan.label, ", ".join(row.diagnosis.flags),
                        ", ".join(note.name for note in row.remedies) or "none")
        return row

    def _remedies(self, plan: DefensePlan, found: Diagnosis) -> list[tuple[Remedy, str]]:
        """The remedies a diagnosis calls for, each with the label of the attack that runs through its view."""
        if not self.config.adaptive or not found.flags:
            return []
        if plan.kind not in ("none", "trainer"):
            # a shieldkit defence declares its adaptive view (BPDA/EOT/its own attacks); the escalations are for
            # models whose defence hides inside forward(), which only the diagnosis can see
            return []
        attack = REMEDY_ATTACK[self.config.suite][0]
        if self.config.norm not in get_registry().resolve("attack", attack).obj.norms:
            logger.warning("%s: no remedy attack supports norm %s; the diagnosis is reported only", plan.label,
                           self.config.norm)
            return []
        chosen = []
        in_suite = {entry.cls.family for entry in self.black}
        for remedy in plan_remedies(found, bounds=self.config.bounds, seed=unit_seed(self.config.seed, "surrogate")):
            if remedy.name == "direct" or (remedy.name == "score_based" and remedy.settings.attack in in_suite):
                continue  # the model's own gradients, or a score-based attack the suite already runs
            family = remedy.settings.attack if remedy.name == "score_based" else attack
            chosen.append((remedy, f"{family} via {remedy.name}"))
        return chosen

    def _remedy_entries(self, plan: DefensePlan) -> list[AttackEntry]:
        attack, params = REMEDY_ATTACK[self.config.suite]
        entries = []
        for remedy, label in plan.remedies:
            if remedy.build is None:  # the score-based fallback attacks the deployed model itself
                spec = (remedy.settings.attack, {"queries": remedy.settings.queries} if remedy.settings.queries else {})
            else:
                # APGD's losses are ce and dlr; DLR is the margin made scale-free, what a remedy asking
                # for a margin loss (outputs of untrusted scale) needs
                loss = {"margin": "dlr"}.get(remedy.settings.loss, remedy.settings.loss)
                spec = (attack, {**params, "loss": loss})
            (entry,) = resolve_attacks([spec], self.config.norm, self.config.eps, self.config.bounds)
            entry.label, entry.remedy = label, remedy.name
            entry.targets_deployed = remedy.build is None
            entries.append(entry)
        return entries

    def _remedy_view(self, plan: DefensePlan, name: str) -> nn.Module:
        """The remedy's view of the attack target, built once per defence (seeded: a resume builds the same)."""
        if name not in plan.remedy_views:
            remedy = next(r for r, _ in plan.remedies if r.name == name)
            x = self.data.x[:REMEDY_SAMPLES].to(self.device)  # what a surrogate is distilled on
            with plan.seeded(unit_seed(self.config.seed, "remedy", plan.label, name)):
                plan.remedy_views[name] = remedy.view(plan.attack_target, x)
        return plan.remedy_views[name]

    def _fit_trainer(self, entry: DefenseEntry, defense: TrainerDefense) -> nn.Module:
        key = digest({"name": entry.name, "params": entry.params, "fit": entry.fit, "seed": self.config.seed,
                      "model": model_digest(self.model),
                      "train": tensor_digest(self.train_data.x[:2000], self.train_data.y[:2000])})
        cache = self.out_dir / "cache" / f"{entry.label.replace('/', '_')}-{key}.pt"
        if cache.is_file():
            # The fitted weights only (read with weights_only=True); the network is the evaluated model's,
            # whose digest is in the file's name.
            try:
                fitted = copy.deepcopy(self.model)
                fitted.load_state_dict(load_state_dict_file(cache, "cache"))
                logger.info("loaded the fitted %s model from %s", entry.label, cache)
                return fitted.eval()
            except Exception as error:  # noqa: BLE001 - a broken or foreign cache is refitted
                logger.warning("ignoring unreadable cache %s: %s", cache, error)
        logger.info("fitting %s on %d training samples", entry.label, len(self.train_data))
        student = copy.deepcopy(self.model)
        for parameter in student.parameters():
            parameter.requires_grad_(True)
        options = dict(entry.fit)
        accepted = fit_options(defense)
        if "quiet" in accepted:
            options.setdefault("quiet", self.quiet)
        if {"checkpoint_dir", "resume"} <= accepted:  # a long fit killed half way resumes from its last epoch
            options.setdefault("checkpoint_dir", str(cache.with_suffix("")) + "-checkpoints")
            options.setdefault("resume", True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(unit_seed(self.config.seed, "fit", entry.label))
            fitted = defense.fit(student, self.train_data, **options)
        fitted.eval()
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_model(fitted, cache, {"base": "the evaluated model", "model_digest": model_digest(self.model)})
        return fitted

    # ------------------------------------------------------ one defence

    def _evaluate_defense(self, plan: DefensePlan) -> None:
        total = len(self.config.eps) * len(self.chunks) * len(self.white + self.black + self._adaptive_entries(plan))
        with Progress(total, plan.label, quiet=self.quiet) as bar:  # a bar on a terminal, else a line per chunk
            self.bar = bar
            for eps in self.config.eps:
                for start, end in self.chunks:
                    self._chunk(plan, eps, start, end)
                    bar.group_done(f"eps={eps:g}, samples {start}-{end}")
            if self.config.checks:
                self._checks(plan)
                bar.group_done("masking checks")

    def _clean(self, plan: DefensePlan, start: int, end: int) -> CleanRow:
        key = f"clean|{plan.label}|{start}"
        row = self.store.get(key)
        if row is not None:
            return row
        x, y = self.data.x[start:end].to(self.device), self.data.y[start:end]
        judged = plan.judge(x, y, unit_seed(self.config.seed, "clean", plan.label, start))
        indices = list(range(start, end))
        return self.store.append(CleanRow(
            key=key, defense=plan.label, chunk=(start, end), pred=judged.predictions.tolist(),
            correct=_pick(indices, ~judged.misclassified), detected=_pick(indices, judged.detected),
        ))

    def _certificate(self, plan: DefensePlan, start: int, end: int) -> CertificateRow | None:
        """A certified defence's certificates for the chunk's clean samples (once per chunk, before any attack)."""
        if plan.defense is None or plan.defense.certifies is None:
            return None
        key = f"certificate|{plan.label}|{start}"
        row = self.store.get(key)
        if row is not None:
            return row
        seed = unit_seed(self.config.seed, key)
        with plan.seeded(seed):
            found = plan.defense.certify(plan.classifier, self.data.x[start:end].to(self.device),
                                         self.data.y[start:end])
        return self.store.append(CertificateRow(
            key=key, defense=plan.label, chunk=(start, end), predictions=found.predictions.tolist(),
            radii=[float(r) for r in found.radii.tolist()], forwards=found.forwards, queries=found.queries,
            seconds=found.seconds))

    def _disproved(self, plan: DefensePlan, eps: float, start: int, end: int, candidates: list[int],
                   fooled: list[int], x_adv: Tensor, seed: int) -> list[int] | None:
        """The fooled samples certified beyond ``eps`` whose adversarial example the defence confidently
        classifies as another class: each disproves its certificate (or the attack's budget)."""
        certificate = self._certificate(plan, start, end)
        if certificate is None:
            return None
        reach = largest_distance(eps, self.config.norm, plan.defense.certifies, self.data.x[0].numel(),
                                 self.config.bounds[1] - self.config.bounds[0])
        position = {index: i for i, index in enumerate(candidates)}
        suspects = [i for i in fooled if reach is not None and certificate.radii[i - start] > reach
                    and certificate.predictions[i - start] == int(self.data.y[i])]
        if not suspects:
            return []
        rows = torch.tensor([position[i] for i in suspects])
        classes = torch.tensor([certificate.predictions[i - start] for i in suspects])
        with plan.seeded(seed):
            disproved = plan.defense.disproves(plan.classifier, x_adv[rows], classes)
        return _pick(suspects, disproved)

    def _chunk(self, plan: DefensePlan, eps: float, start: int, end: int) -> None:
        cascade = self.config.cascade
        self._certificate(plan, start, end)
        clean = self._clean(plan, start, end)
        correct = list(clean.correct)
        remaining = list(correct)
        for entry in self.white:
            row = self._unit(plan, "naive", entry, eps, start, end, remaining if cascade else correct)
            remaining = _minus(remaining, row.fooled)
        after_white = list(remaining)
        for entry in self.black:
            row = self._unit(plan, "blackbox", entry, eps, start, end, remaining if cascade else correct)
            remaining = _minus(remaining, row.fooled)
        adaptive_left = list(after_white)
        for entry in self._adaptive_entries(plan):
            row = self._unit(plan, "adaptive", entry, eps, start, end, adaptive_left if cascade else correct)
            adaptive_left = _minus(adaptive_left, row.fooled)

    def _adaptive_entries(self, plan: DefensePlan) -> list[AttackEntry]:
        """The defence's own adaptive attacks (against the deployed model), then the white-box ones on the view."""
        if plan.label not in self._adaptive_cache:
            extra = resolve_attacks(plan.extra_attacks, self.config.norm, self.config.eps, self.config.bounds) \
                if plan.extra_attacks else []
            for entry in extra:
                entry.targets_deployed = True
                entry.label = f"{entry.label} (defence's own)"
            white = self.white if plan.view is not None else []
            self._adaptive_cache[plan.label] = extra + list(white) + self._remedy_entries(plan)
        return self._adaptive_cache[plan.label]

    def _unit(self, plan: DefensePlan, stage: str, entry: AttackEntry, eps: float, start: int, end: int,
              candidates: list[int]) -> AttackRow:
        key = f"attack|{plan.label}|{eps!r}|{stage}|{entry.label}|{start}"
        row = self.store.get(key)
        if row is not None:
            self.bar.update(1)
            return row
        seed = unit_seed(self.config.seed, plan.label, stage, entry.label, eps, start)
        row = AttackRow(key=key, defense=plan.label, eps=eps, stage=stage, attack=entry.label, name=entry.name,
                        access=entry.access, chunk=(start, end), seed=seed, attacked=list(candidates))
        self.bar.set_postfix_str(f"eps={eps:g} {stage} {entry.label}", refresh=False)
        if candidates:
            index = torch.tensor(candidates, dtype=torch.long)
            x = self.data.x[index].to(self.device)
            y = self.data.y[index].to(self.device)
            target = self._target_model(plan, stage, entry)
            attack = entry.build(eps, self.config.norm, self.config.bounds, seed)
            plan.reseed(seed)
            try:
                result = attack.run(target, x, y)
            except Exception as error:  # noqa: BLE001 - recorded, flagged, and the run goes on
                row.error = masking.one_line(error)
                logger.warning("%s on %s (eps=%g, %s) failed: %s", entry.label, plan.label, eps, stage, row.error)
            else:
                judged = plan.judge(result.x_adv, y, seed + 1)
                row.fooled, row.misclassified = _pick(candidates, judged.fooled), _pick(candidates, judged.misclassified)
                row.detected, row.pred = _pick(candidates, judged.detected), judged.predictions.tolist()
                row.seconds, row.forwards = result.seconds, result.forwards
                row.backwards, row.queries = result.backwards, result.queries
                row.disproved = self._disproved(plan, eps, start, end, candidates, row.fooled, result.x_adv, seed + 2)
                self._save_examples(row, candidates, result.x_adv, judged.predictions)
        self.bar.update(1)
        return self.store.append(row)

    def _target_model(self, plan: DefensePlan, stage: str, entry: AttackEntry) -> nn.Module:
        if stage == "adaptive" and entry.remedy is not None and not entry.targets_deployed:
            return self._remedy_view(plan, entry.remedy)
        if stage == "adaptive" and not entry.targets_deployed and plan.view is not None:
            return plan.view
        return plan.deployed

    def _save_examples(self, row: AttackRow, candidates: list[int], x_adv: Tensor, predictions: Tensor) -> None:
        """Keep the adversarial images of the first few samples for the report's example grid."""
        wanted = [i for i, index in enumerate(candidates) if index < self.config.examples]
        if wanted:
            row.examples = save_examples(self.out_dir, row.key, [candidates[i] for i in wanted], x_adv[wanted],
                                         predictions[wanted].tolist())

    # ------------------------------------------------------------ checks

    def _checks(self, plan: DefensePlan) -> None:
        if self.shard[0] != 0:
            return  # the checks run on the first chunk, which rank 0 owns
        clean = self._clean(plan, *self.chunks[0]) if self.chunks else None
        if clean is None:
            return
        start, end = clean.chunk
        sample = list(range(start, min(end, start + masking.CHECK_SAMPLES)))
        correct = [i for i in clean.correct if i < start + masking.CHECK_SAMPLES]
        key = f"check|{plan.label}|randomness"
        if key not in self.store:
            x = self.data.x[sample].to(self.device)

            def forward(images: Tensor, seed: int) -> Tensor:
                with plan.seeded(seed):
                    return plan.deployed(images).float().cpu()

            seeds = (unit_seed(self.config.seed, key, 1), unit_seed(self.config.seed, key, 2))
            self.store.append(masking.measure_randomness(forward, x, seeds, key, plan.label))
        modes = [("naive", plan.deployed, strongest_white_box(self.attacks))]
        if (adaptive := self._adaptive_target(plan)) is not None:
            _, view, entry = adaptive
            modes.append(("adaptive", view, entry or strongest_white_box(self.attacks)))
        for mode, model, entry in modes:
            key = f"check|{plan.label}|gradients|{mode}"
            if key not in self.store and correct:
                index = torch.tensor(correct)
                plan.reseed(unit_seed(self.config.seed, key))
                self.store.append(masking.measure_gradients(model, self.data.x[index].to(self.device),
                                                            self.data.y[index].to(self.device), key, plan.label, mode))
            self._large_eps_check(plan, mode, correct, model, entry)
        for mode in ("naive", "adaptive"):
            for eps in self.config.eps:
                self._effort_check(plan, mode, eps, clean)

    def _large_eps_check(self, plan: DefensePlan, mode: str, correct: list[int], model: nn.Module,
                         entry: AttackEntry | None) -> None:
        key = f"check|{plan.label}|large_eps|{mode}"
        if entry is None or key in self.store or not correct:
            return
        low, high = self.config.bounds
        size = self.data.x[0].numel()
        eps = {"linf": high - low, "l2": (high - low) * size ** 0.5, "l1": (high - low) * size}.get(
            self.config.norm, float(size))
        seed = unit_seed(self.config.seed, key)
        index = torch.tensor(correct)
        x, y = self.data.x[index].to(self.device), self.data.y[index].to(self.device)
        row = LargeEpsRow(key=key, defense=plan.label, mode=mode, attack=entry.label, eps=eps, samples=len(correct))
        try:
            attack = entry.build(eps, self.config.norm, self.config.bounds, seed)
            plan.reseed(seed)
            result = attack.run(model, x, y)
            judged = plan.judge(result.x_adv, y, seed + 1)
            row.accuracy = 1.0 - judged.fooled.float().mean().item()
        except Exception as error:  # noqa: BLE001 - a crash here is itself a masking signal
            row.error = masking.one_line(error)
        self.store.append(row)

    def _effort_check(self, plan: DefensePlan, mode: str, eps: float, clean: CleanRow) -> None:
        """Carlini et al.'s "more iterations and restarts": the suite's strongest iterative attack with twice
        the steps and one more restart, on (up to CHECK_SAMPLES of) the first chunk's samples still robust
        in ``mode``; what it breaks is accuracy the suite had not converged on."""
        key = f"check|{plan.label}|more_effort|{mode}|{eps!r}"
        if key in self.store:
            return
        found = self._effort_attack(plan, mode)
        if found is None:
            return  # adaptive with nothing to adapt: the naive row is the adaptive one
        entry, target_name, target = found
        start, end = clean.chunk
        stages = ("naive", "blackbox") if mode == "naive" else ("naive", "blackbox", "adaptive")
        fooled: set[int] = set()
        for row in self.store:
            if isinstance(row, AttackRow) and row.defense == plan.label and row.eps == eps \
                    and row.stage in stages and tuple(row.chunk) == (start, end):
                fooled.update(row.fooled)
        robust = [i for i in clean.correct if i not in fooled]
        defaults = {name: p.effective for name, p in entry.cls.effective_params().items()}
        steps = 2 * int(entry.params.get("steps", defaults.get("steps")) or 1)
        more = {"steps": steps}
        restarts = 1
        if "restarts" in defaults:
            restarts = more["restarts"] = int(entry.params.get("restarts", defaults["restarts"]) or 1) + 1
        attacked = robust[:masking.CHECK_SAMPLES]
        row = EffortRow(key=key, defense=plan.label, mode=mode, eps=eps, attack=entry.label, target=target_name,
                        steps=steps, restarts=restarts, attacked=attacked, robust=len(robust) / max(1, end - start))
        if attacked:
            seed = unit_seed(self.config.seed, key)
            index = torch.tensor(attacked)
            x, y = self.data.x[index].to(self.device), self.data.y[index].to(self.device)
            stronger = dataclasses.replace(entry, params={**entry.params, **more})
            try:
                attack = stronger.build(eps, self.config.norm, self.config.bounds, seed)
                plan.reseed(seed)
                result = attack.run(target, x, y)
                row.fooled = _pick(attacked, plan.judge(result.x_adv, y, seed + 1).fooled)
            except Exception as error:  # noqa: BLE001 - recorded; the check says it could not run
                row.error = masking.one_line(error)
        self.store.append(row)

    def _effort_attack(self, plan: DefensePlan, mode: str) -> tuple[AttackEntry, str, nn.Module] | None:
        """The attack the "more effort" check repeats in ``mode``, the name of what it attacks, and that model."""
        if mode == "naive":
            entry = effort_attack(self.white)
            return None if entry is None else (entry, "deployed", plan.deployed)
        adaptive = self._adaptive_target(plan)
        if adaptive is None:
            return None
        name, model, entry = adaptive
        entry = entry or effort_attack(self.white)
        return None if entry is None else (entry, name, model)

    def _adaptive_target(self, plan: DefensePlan) -> tuple[str, nn.Module, AttackEntry | None] | None:
        """What the adaptive mode's checks attack: the defence's view (with the suite's attacks, ``None``
        here), else the first escalation's view with its iterative white-box attack (the plan lists the
        likeliest first), else nothing: the adaptive mode is the naive one."""
        if plan.view is not None:
            return "view", plan.view, None
        for entry in self._adaptive_entries(plan):
            if entry.remedy is not None and entry.white_box and "steps" in component_params(entry.cls):
                return entry.remedy, self._remedy_view(plan, entry.remedy), entry
        return None


def _pick(indices: list[int], mask: Tensor) -> list[int]:
    return [index for index, keep in zip(indices, mask.tolist()) if keep]


def _minus(indices: list[int], removed: list[int]) -> list[int]:
    gone = set(removed)
    return [i for i in indices if i not in gone]


def evaluate(model: nn.Module, data: Any, attacks: list | tuple | None = None, defenses: list | tuple = ("none",),
             eps: list[float] | tuple[float, ...] | float = (0.1, 0.2, 0.3), *, norm: str = "linf",
             n: int | None = None, batch_size: int = 100, out_dir: str | os.PathLike = "shieldkit-runs/evaluate",
             seed: int = 0, quiet: bool = False, resume: bool = False, train_data: Any = None,
             cascade: bool = True, adaptive: bool = True, eot: int = 8, checks: bool = True,
             examples: int = 6, fpr: float = 0.05, bounds: tuple[float, float] = (0.0, 1.0),
             suite: str = "standard"):
    """Evaluate a model's robustness against an attack suite, with and without defences.

    Every attack runs naively on each deployed defence and adaptively on the
    defence's attack view (BPDA for non-differentiable transforms, EOT for
    randomised ones, the defence's own adaptive attack where it has one). Robust
    accuracy per (defence, eps) is the worst case per sample over the whole suite;
    later attacks only attack samples still robust (a cascade). A gradient-masking
    checklist flags numbers that cannot be trusted. Everything is written to
    ``out_dir`` as it finishes; ``resume=True`` continues an interrupted run.

    Args:
        model: classifier from images in ``bounds`` to logits (normalisation inside).
        data: ``ImageData`` or an ``(x, y)`` pair: the evaluation set.
        attacks: names (``"pgd"``, ``"pgd.art"``), ``(name, params)`` pairs,
            ``{"name": ..., **params}`` dicts or ``Attack`` instances; default: the
            preset ``suite``.
        defenses: the same forms for defences; ``"none"`` is the undefended model.
            Trainers and detectors are fitted on ``train_data`` first (a dict entry's
            ``"fit"`` holds fit options).
        eps: the budgets of the grid.
        norm: the grid's norm; every attack must support it.
        n: evaluate a seeded random subset of this many samples (``None``: all).
        batch_size: samples per unit of work (also the resume and sharding granularity).
        out_dir: where results.jsonl, summary.json, report.md/html and records go.
        seed: seeds every unit (per sample range, not per process).
        quiet: no progress bars.
        resume: continue the run in ``out_dir`` (refused if the configuration changed).
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

    Returns:
        A :class:`~shieldkit.evaluation.report.Report`.
    """
    from shieldkit.evaluation.config import parse_eps
    from shieldkit.evaluation.presets import check_suite

    config = EvalConfig(eps=parse_eps(eps), norm=norm, n=n, batch_size=batch_size, seed=seed, cascade=cascade,
                        adaptive=adaptive, eot=eot, checks=checks, examples=examples, fpr=fpr,
                        bounds=tuple(bounds), out=str(Path(out_dir)), suite=check_suite(suite))
    config.norm = _norm(norm)
    runner = Runner(config, model, data, train_data=train_data, quiet=quiet, resume=resume,
                    attacks=list(attacks or []),
                    defenses=list(defenses if not isinstance(defenses, str) else [defenses]))
    return runner.run()


def _norm(norm: str) -> str:
    from shieldkit.threat import check_norm

    return check_norm(norm, owner="evaluate")
