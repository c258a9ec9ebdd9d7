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

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shieldkit.core.defense import DetectorDefense, TrainerDefense
from shieldkit.core.errors import InvalidInputError, InvalidModelError, InvalidParameterError
from shieldkit.core.guard import ModelStateGuard
from shieldkit.core.outputs import LogitsOutput, describe, logits_of, output_kind, refusal
from shieldkit.core.threat import format_eps
from shieldkit.core.validation import check_logits, model_device
from shieldkit.data.imagedata import ImageData
from shieldkit.data.streamed import StreamedData, as_eval_data
from shieldkit.diagnosis import diagnose
from shieldkit.evaluation import masking
from shieldkit.evaluation.adaptive import DefensePlan, plan_defense
from shieldkit.evaluation.certificates import disproved
from shieldkit.evaluation.config import (
    AUTO_BATCH_SIZE,
    PRECISIONS,
    EvalConfig,
    check_eps,
    check_scalars,
    default_eps,
    digest,
)
from shieldkit.evaluation.examples import save_clean_examples, save_examples
from shieldkit.evaluation.judging import draw_counts, judging_draws
from shieldkit.evaluation.manifest import Manifest, build_manifest, defense_manifest, write_manifest
from shieldkit.evaluation.measurements import MaskingMeasurements
from shieldkit.evaluation.preparation import (
    adaptive_attacks,
    choose_remedies,
    fit_detector,
    fit_trainer,
)
from shieldkit.evaluation.records import (
    AttackRow,
    CertificateRow,
    CleanRow,
    DiagnosisRow,
    RemedyNote,
)
from shieldkit.evaluation.results import (
    CONFIG,
    DiskFullError,
    ResultsStore,
    RunLock,
    check_writable,
    environment_record,
    is_disk_full,
    write_json,
)
from shieldkit.evaluation.setup import describe_run
from shieldkit.evaluation.suite import AttackEntry, DefenseEntry, Suite, resolve_suite, spec_records
from shieldkit.evaluation.targets import DEPLOYED, DefenseTargets
from shieldkit.evaluation.units import (
    AttackOnTarget,
    Unit,
    chunk_ranges,
    data_digest,
    minus,
    model_digest,
    pick,
    plan_units,
    rank_chunks,
    shard_units,
    tensor_digest,
    unit_seed,
)
from shieldkit.infra import distributed
from shieldkit.infra.memory import auto_batch_size
from shieldkit.infra.progress import Progress, progress_line

logger = logging.getLogger(__name__)

#: samples the diagnosis probes (the first of the evaluation set), and that a remedy's surrogate is distilled on
DIAGNOSIS_SAMPLES = 64
REMEDY_SAMPLES = 256


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
        self.handed_over_in = "train" if model.training else "eval"
        if model.training:  # the guard evaluates it in eval mode; a forgotten .eval() should not pass unseen
            logger.warning("the model is evaluated in eval mode; yours was in train mode (call model.eval() "
                           "first if train mode was a mistake, e.g. dropout or batch norm statistics)")
        data = as_eval_data(data, "data")
        self.total = len(data)
        if len(data) == 0:
            raise InvalidInputError("data: the evaluation set is empty (0 samples)")
        image_size = int(data.x[0].numel())
        if config.eps is None:  # the grid follows the data: MNIST's for digits, RobustBench's for colour images
            config.eps = default_eps(config.norm, data.shape)
            logger.info("eps grid: %s (the default for %s images; set --eps to change)",
                        ", ".join(format_eps(e) for e in config.eps), "x".join(map(str, data.shape)))
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
        self.train_data = _in_memory(train_data) if train_data is not None else None
        if needs_training and self.train_data is None:
            raise InvalidParameterError(
                f"defenses {', '.join(needs_training)} must be fitted first: pass train_data= (the CLI uses the "
                "data set's train split)"
            )
        self._check_model_output()
        self.out_dir = check_writable(config.out)
        self.white, self.black = suite.white_box, suite.black_box
        if config.batch_size == AUTO_BATCH_SIZE:
            config.batch_size = self._auto_batch_size()
        self.chunks = chunk_ranges(len(self.data), config.batch_size)  # every rank's: a rank filters the units
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
        """Call the model once on two images: the logits' shape against the labels, and how to read its output
        (a tuple, a dict or an output object: :class:`LogitsOutput` takes the logits from it, for every attack and
        remedy)."""
        x = self.data.x[:2].to(self.device)
        try:
            with ModelStateGuard(self.model), torch.no_grad():
                output = self.model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:  # before any attack: the data does not fit
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InvalidModelError(
                f"model cannot take the data's images (a batch of shape {tuple(x.shape)}): {first}; does the data "
                "(image size, channels) match what the model was trained on?") from None
        kind = output_kind(output)
        if kind is None:
            raise refusal(output)
        self.output_kind = kind
        if kind != "tensor":
            logger.info("the model returns a %s: %s is taken as the logits by every attack and remedy",
                        type(output).__name__, describe(kind))
            self.model = LogitsOutput(self.model, kind)
        logits = check_logits(logits_of(output, kind), x.shape[0])
        largest = int(self.data.y.max())
        if logits.shape[1] <= largest:
            raise InvalidModelError(f"model has {logits.shape[1]} outputs but the data has label {largest}")

    def _auto_batch_size(self) -> int:
        """``batch_size = "auto"``: a resumed run keeps the chunks it was started with; a new one asks the device
        (:func:`~shieldkit.infra.memory.auto_batch_size`)."""
        previous = self.out_dir_config()
        if self.resume and isinstance(previous.get("batch_size"), int):
            return previous["batch_size"]
        with ModelStateGuard(self.model):
            return auto_batch_size(self.model, self.data.x[:8].to(self.device), limit=len(self.data))

    def out_dir_config(self) -> dict[str, Any]:
        """The configuration recorded in ``config.out``'s ``config.json`` (empty when there is none)."""
        try:
            return json.loads((Path(self.config.out) / CONFIG).read_text(encoding="utf-8")).get("config", {})
        except (OSError, ValueError, AttributeError):
            return {}

    def identity(self) -> dict[str, Any]:
        attacks, defenses = spec_records(self.attacks, self.defenses)
        identity = self.config.identity()
        identity.update(attacks=attacks, defenses=defenses, model_digest=model_digest(self.model),
                        data_digest=data_digest(self.data), n=len(self.data))
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
        """Plan (prepare every defence: fit, diagnose, choose remedies; list its units once), write the manifest,
        then run this shard's units into ``store``; returns the manifest.

        Under a process group rank 0 prepares first (it fits and caches trainers; the others load them), and
        only rank 0 writes ``plan.json`` and the clean example images.
        """
        self.store = store
        with ModelStateGuard(self.model):
            with distributed.rank_zero_first(), distributed.local():
                self.plans = [self._prepare(entry) for entry in self.defenses]
            adaptive = {plan.label: adaptive_attacks(plan, self.config, self.white) for plan in self.plans}
            units = {plan.label: self.plan_units(plan, adaptive[plan.label]) for plan in self.plans}
            manifest = self.manifest(config_hash)
            if self.shard[0] == 0:
                write_manifest(self.out_dir, manifest)
                first = min(self.config.examples, len(self.data))
                save_clean_examples(self.out_dir, self.data.x[:first], self.data.y[:first])
            for plan in self.plans:
                self._evaluate_defense(plan, adaptive[plan.label], units[plan.label])
        return manifest

    def manifest(self, config_hash: str) -> Manifest:
        """What the rows mean (``plan.json``), from the prepared plans."""
        setup = describe_run(self.config, self.model, self.data, total=self.total,
                             handed_over_in=self.handed_over_in, output=self.output_kind,
                             digest=model_digest(self.model), device=self.device)
        return build_manifest(config_hash, self.data, self.config, self.white + self.black,
                              [defense_manifest(plan, entry, self.config.fpr)
                               for plan, entry in zip(self.plans, self.defenses)], setup)

    def _prepare(self, entry: DefenseEntry) -> DefensePlan:
        progress_line(logger, self.quiet, "preparing %s: fitting, diagnosis and remedies before any attack",
                      entry.label)
        defense = entry.build(unit_seed(self.config.seed, "defense", entry.label))
        model = self.model
        if isinstance(defense, TrainerDefense):
            model = fit_trainer(entry, defense, self.model, self.train_data, self.out_dir, self.config.seed,
                                self.quiet)
        elif isinstance(defense, DetectorDefense) and (entry.instance is None or defense.threshold is None):
            fit_detector(entry, defense, self.model, self.train_data, self.config, self.device)
        plan = plan_defense(entry.label, defense, model, eot=self.config.eot, adaptive=self.config.adaptive,
                            norm=self.config.norm)
        self._diagnose(plan)
        return plan

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
            if plan.randomized or "random_forward" in found.flags:
                with ModelStateGuard(plan.deployed):
                    row.judging_draws, row.prediction_variance = judging_draws(
                        plan, x, y, unit_seed(self.config.seed, "judging", plan.label))
        plan.draws = row.judging_draws
        # the same on a resume: chosen from the row alone
        plan.remedies = choose_remedies(plan, row.diagnosis, self.config, self.black)
        row.remedies = [RemedyNote(remedy.name, remedy.reason, label) for remedy, label in plan.remedies]
        if not recorded and self.shard[0] == 0:  # every rank plans; rank 0 records
            self.store.append(row)
        if row.diagnosis.flags:
            logger.info("%s: diagnosis found %s; remedies: %s", plan.label, ", ".join(row.diagnosis.flags),
                        ", ".join(note.name for note in row.remedies) or "none")
        if plan.draws > 1:
            logger.info("%s: randomised; each point judged on %d draws (largest prediction variance %.3f)",
                        plan.label, plan.draws, row.prediction_variance or 0.0)
        return row

    # ------------------------------------------------------ one defence

    def plan_units(self, plan: DefensePlan, adaptive: list[AttackOnTarget]) -> list[Unit]:
        """This rank's units of one prepared defence, in the order they run."""
        units = plan_units(plan.label, [AttackOnTarget(entry, DEPLOYED) for entry in self.white],
                           [AttackOnTarget(entry, DEPLOYED) for entry in self.black], adaptive, self.config.eps,
                           self.chunks)
        return shard_units(units, self.chunks, *self.shard)

    def _evaluate_defense(self, plan: DefensePlan, adaptive: list[AttackOnTarget], units: list[Unit]) -> None:
        """Run one defence's units (this rank's), then, on rank 0, its masking measurements."""
        targets = DefenseTargets(plan, lambda: self.data.x[:REMEDY_SAMPLES].to(self.device), self.config.seed)
        groups: dict[tuple[float, tuple[int, int]], list[Unit]] = {}
        for unit in units:
            groups.setdefault((unit.eps, unit.chunk), []).append(unit)
        with Progress(len(units), plan.label, quiet=self.quiet) as bar:  # a bar on a terminal, else a line per chunk
            self.bar = bar
            for eps in self.config.eps:
                # a chunk with no unit (a suite of no attack) still gets its clean row and certificate
                for start, end in rank_chunks(self.chunks, *self.shard):
                    self._chunk(plan, targets, (start, end), groups.get((eps, (start, end)), []))
                    bar.group_done(f"eps={format_eps(eps)}, samples {start}-{end}")
            # the checks run on the first chunk, which rank 0 owns
            if self.config.checks and self.shard[0] == 0 and self.chunks:
                clean = self._clean(plan, *self.chunks[0])
                MaskingMeasurements(self.store, self.data, self.config, self.device, self.white).run(
                    plan, targets, adaptive, clean)
                bar.group_done("masking checks")

    def _clean(self, plan: DefensePlan, start: int, end: int) -> CleanRow:
        key = f"clean|{plan.label}|{start}"
        row = self.store.get(key)
        if row is not None:
            return row
        x, y = self.data.x[start:end].to(self.device), self.data.y[start:end]
        judged = plan.judge(x, y, unit_seed(self.config.seed, "clean", plan.label, start))
        indices = list(range(start, end))
        # a randomised model's candidates: every sample it gets right on some draw
        correct = ~judged.misclassified if judged.selected is None else judged.selected + judged.judged > 0
        return self.store.append(CleanRow(
            key=key, defense=plan.label, chunk=(start, end), pred=judged.predictions.tolist(),
            correct=pick(indices, correct), detected=pick(indices, judged.detected), **draw_counts(judged),
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

    def _chunk(self, plan: DefensePlan, targets: DefenseTargets, chunk: tuple[int, int], units: list[Unit]) -> None:
        """One chunk at one eps: the clean row, the certificate, then its units in order, each on what the earlier
        ones of its cascade left robust. Black-box units go on from what the naive ones left; adaptive units start
        again from that (so their results on samples the black-box stage fooled are known too)."""
        start, end = chunk
        self._certificate(plan, start, end)
        correct = list(self._clean(plan, start, end).correct)
        robust: dict[str, list[int]] = {}  # per stage, what its cascade left so far
        for unit in units:
            if unit.stage not in robust:
                robust[unit.stage] = list(robust.get("naive", correct))
            row = self._unit(plan, unit, targets, robust[unit.stage] if self.config.cascade else correct)
            robust[unit.stage] = minus(robust[unit.stage], row.fooled)

    def _unit(self, plan: DefensePlan, unit: Unit, targets: DefenseTargets, candidates: list[int]) -> AttackRow:
        """One unit on ``candidates`` of its chunk, on the model of its role, judged on the deployed system;
        skipped when its row is stored already (a remedy's view is built only when a unit needs it)."""
        entry, eps, stage, (start, end) = unit.attack.entry, unit.eps, unit.stage, unit.chunk
        row = self.store.get(unit.key)
        if row is not None:
            self.bar.update(1, resumed=True)  # read back, not computed: kept out of the time-left rate
            return row
        seed = unit.seed(self.config.seed)
        row = AttackRow(key=unit.key, defense=plan.label, eps=eps, stage=stage, attack=entry.label, name=entry.name,
                        access=entry.access, chunk=(start, end), seed=seed, attacked=list(candidates))
        self.bar.set_postfix_str(f"eps={format_eps(eps)} {stage} {entry.label}", refresh=False)
        if candidates:
            index = torch.tensor(candidates, dtype=torch.long)
            x = self.data.x[start:end][index - start].to(self.device)  # the chunk is read once for all its units
            y = self.data.y[index].to(self.device)
            target = targets.model(unit.attack.role)
            # on a GPU an attack with independent sub-problems may fill the chunk's rows (APGD-T's targets)
            rows = self.config.batch_size if self.device.type == "cuda" else None
            built = entry.build(eps, self.config.norm, self.config.bounds, seed, batch_rows=rows)
            plan.reseed(seed)
            try:
                with self._precision():
                    result = built.run(target, x, y)
            except Exception as error:  # noqa: BLE001 - recorded, flagged, and the run goes on
                row.error = masking.one_line(error)
                logger.warning("%s on %s (eps=%s, %s) failed: %s", entry.label, plan.label, format_eps(eps), stage,
                               row.error)
            else:
                judged = plan.judge(result.x_adv, y, seed + 1)
                row.fooled, row.misclassified = pick(candidates, judged.fooled), pick(candidates, judged.misclassified)
                row.detected, row.pred = pick(candidates, judged.detected), judged.predictions.tolist()
                for name, value in draw_counts(judged).items():
                    setattr(row, name, value)
                row.seconds, row.forwards = result.seconds, result.forwards
                row.backwards, row.queries = result.backwards, result.queries
                certificate = self._certificate(plan, start, end)
                if certificate is not None:
                    row.disproved = disproved(plan, certificate, self.config, self.data, eps, candidates, row.fooled,
                                              result.x_adv, seed + 2)
                self._save_examples(row, candidates, result.x_adv, judged.predictions)
        self.bar.update(1)
        return self.store.append(row)

    def _precision(self):
        """The attacks' arithmetic (``precision``): autocast to bf16/fp16 on the model's device, or nothing.
        Images stay in their dtype, so the base class checks bounds and budget there; judging runs outside."""
        dtype = PRECISIONS[self.config.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=getattr(torch, dtype))

    def _save_examples(self, row: AttackRow, candidates: list[int], x_adv: Tensor, predictions: Tensor) -> None:
        """Keep the adversarial images of the first few samples for the report's example grid."""
        wanted = [i for i, index in enumerate(candidates) if index < self.config.examples]
        if wanted:
            row.examples = save_examples(self.out_dir, row.key, [candidates[i] for i in wanted], x_adv[wanted],
                                         predictions[wanted].tolist())


def _in_memory(train_data: Any) -> ImageData:
    """Training data for fitting trainers and detectors, held in memory: fitting visits it many times."""
    data = as_eval_data(train_data, "train_data")
    return data.materialize() if isinstance(data, StreamedData) else data
