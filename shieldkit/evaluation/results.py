"""``results.jsonl``: one JSON row per finished unit of work, written durably, and resuming from it.

Every row (a typed record of :mod:`~shieldkit.evaluation.records`) carries a
``key`` naming its unit (defence, epsilon, stage, attack, sample range). A row is
appended, flushed and ``fsync``-ed as soon as its unit finishes, so a run killed
at any moment (SIGKILL included) loses at most the unit in progress and never
leaves a duplicated row; the one line a kill can truncate is cut off when the
run resumes. ``config.json`` holds the results format, the configuration and its
hash; a resume with another format or configuration is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import platform
import re
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from shieldkit.core.errors import InvalidParameterError, ShieldkitError
from shieldkit.evaluation.records import RESULTS_FORMAT, Row, row_from_json, strict_json, to_json
from shieldkit.infra import distributed

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
CONFIG = "config.json"
#: the run's manifest (:mod:`~shieldkit.evaluation.manifest`): what the rows mean
MANIFEST = "plan.json"
ENVIRONMENT = "environment.json"
LOCK = ".shieldkit.lock"
#: What a fresh run clears from an old output folder (caches of fitted defences are kept).
RUN_OUTPUTS = (RESULTS, MANIFEST, "summary.json", "report.md", "report.html", "examples", "plots")


class DiskFullError(ShieldkitError, OSError):
    """The disk filled up during a run: the message names the folder, says the completed rows are kept
    and that ``--resume`` continues."""

    def __init__(self, out_dir: Path, rows_kept: int):
        self.out_dir, self.rows_kept = Path(out_dir), rows_kept
        super().__init__(errno.ENOSPC, f"no space left on device writing to {str(self.out_dir)!r}: the {rows_kept} "
                                       f"completed rows are kept in {RESULTS}; free some space and run again with "
                                       "--resume to continue")

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is the operating system saying the disk (or the user's quota) is full."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def check_writable(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` and prove it writable, or raise a one-line error naming it."""
    path = Path(out_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise InvalidParameterError(f"out: cannot write to {str(path)!r}: {error.strerror or error}") from None
    return path


# ------------------------------------------------------------ the default folder: one sub-folder per run

#: The name of a run's sub-folder of the default output folder: the local time it started (``2026-12-07-143012``;
#: a second run in the same second gets ``-2``, and so on).
RUN_NAME = "%Y-%m-%d-%H%M%S"
_RUN_NAME = re.compile(r"(\d{4}-\d\d-\d\d-\d{6})(?:-(\d+))?")
#: The symbolic link, beside the sub-folders, to the latest run started (where the system allows links).
LATEST = "latest"


def default_run_dir(base: str | os.PathLike, resume: bool = False) -> Path:
    """The folder of a run that was given none: a new sub-folder of ``base`` named by the time it starts, so that
    a run never replaces the one before; with ``resume``, the latest sub-folder (or ``base`` itself, where a
    shieldkit before the sub-folders wrote its run; a new sub-folder when there is nothing to resume).

    Under a process group rank 0 chooses (and creates) the folder and every rank gets its choice.
    """
    chosen = None
    if distributed.is_main():
        base = check_writable(base)
        latest = latest_run_dir(base) if resume else None
        chosen = str(latest or _new_run_dir(base))
    return Path(distributed.broadcast_object(chosen))


def latest_run_dir(base: str | os.PathLike) -> Path | None:
    """The latest run under ``base`` (its newest sub-folder by name), ``base`` itself when it holds a run written
    there directly, or ``None``."""
    base = Path(base)
    runs = []
    if base.is_dir():
        for path in base.iterdir():
            match = _RUN_NAME.fullmatch(path.name)
            if match and path.is_dir() and not path.is_symlink():
                runs.append(((match.group(1), int(match.group(2) or 1)), path))
    if runs:
        return max(runs)[1]
    return base if (base / CONFIG).is_file() else None


def _new_run_dir(base: Path) -> Path:
    stamp = datetime.now().strftime(RUN_NAME)
    for attempt in range(1, 1000):
        path = base / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            path.mkdir()  # exclusive: two runs started in the same second get two folders
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise InvalidParameterError(f"out: cannot write to {str(base)!r}: {error.strerror or error}") from None
    raise InvalidParameterError(f"out: {str(base)!r} has no free run folder named {stamp}-N; give --out")


def mark_latest(run_dir: str | os.PathLike) -> None:
    """Point ``latest`` beside ``run_dir`` at it (a relative link, replaced atomically; rank 0 only). Where the
    system has no symbolic links nothing is written: :func:`latest_run_dir` finds the latest run by name."""
    run_dir = Path(run_dir)
    if not distributed.is_main():
        return
    link = run_dir.parent / LATEST
    temporary = run_dir.parent / f".{LATEST}-{os.getpid()}"
    try:
        if temporary.is_symlink():
            temporary.unlink()
        temporary.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(temporary, link)
    except OSError as error:  # no symbolic links here (Windows without the privilege), or a folder named latest
        logger.debug("no %s link in %s: %s", LATEST, run_dir.parent, error)
        with contextlib.suppress(OSError):
            temporary.unlink()


def discard_if_empty(run_dir: str | os.PathLike) -> None:
    """Remove a run folder :func:`default_run_dir` created for a run that then failed before writing anything."""
    if distributed.is_main():
        with contextlib.suppress(OSError):
            Path(run_dir).rmdir()  # only an empty folder


class RunLock:
    """One run per output folder: an exclusive advisory lock on ``out_dir/.shieldkit.lock``, held for the run.

    A second run (or a second ``--resume``) into the same folder fails at once with
    a one-line error naming the folder and the holder's process id, before it
    writes anything. The lock is the operating system's (``flock``): a run killed by
    any signal releases it with its process, so a stale lock file from a killed
    run is simply taken over. Where ``fcntl`` does not exist (Windows) no lock is taken.
    """

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK
        self._handle = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            logger.debug("no fcntl: %s is not locked against a second run", self.path.parent)
            return self
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise InvalidParameterError(
                f"out: {str(self.path.parent)!r} is in use by another shieldkit run (process {holder}); wait for it "
                "to finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None


class ResultsStore:
    """The rows of one run, in memory and in ``out_dir/results.jsonl``.

    Args:
        out_dir: the run's folder (must exist and be writable).
        config: the run's identity (JSON-able).
        config_hash: its hash.
        resume: continue the rows already there (same ``config_hash`` only);
            otherwise earlier run outputs in ``out_dir`` are replaced.
    """

    def __init__(self, out_dir: Path, config: dict[str, Any], config_hash: str, resume: bool = False):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS
        self.rows: dict[str, Row] = {}
        self.resumed = 0
        if resume and (self.out_dir / CONFIG).is_file():
            self._check_same_config(config, config_hash)
            self._load()
        else:
            if resume:
                logger.info("nothing to resume in %s: starting a fresh run", self.out_dir)
            self._clear()
            write_config(self.out_dir, config, config_hash)
            self.path.touch()
        self._handle = self.path.open("a", encoding="utf-8")

    # ------------------------------------------------------------ reading

    def _check_same_config(self, config: dict[str, Any], config_hash: str) -> None:
        try:
            previous = json.loads((self.out_dir / CONFIG).read_text())
        except (OSError, ValueError) as error:
            raise InvalidParameterError(f"--resume: cannot read {self.out_dir / CONFIG}: {error}") from None
        check_format(previous, self.out_dir)
        if previous.get("hash") != config_hash:
            old = previous.get("config", {})
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise InvalidParameterError(
                f"--resume: the configuration differs from the run in {str(self.out_dir)!r} "
                f"(changed: {', '.join(changed) or 'unknown'}); use another --out or run without --resume"
            )

    def _load(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            data = handle.read()
        good_end = 0
        offset = 0
        for line in data.splitlines(keepends=True):
            offset_next = offset + len(line)
            complete = line.endswith(b"\n")
            try:
                row = row_from_json(json.loads(line)) if complete else None
            except (ValueError, TypeError, AttributeError):
                row = None
            if row is None:
                if offset_next < len(data) and complete:
                    raise InvalidParameterError(
                        f"--resume: {self.path} is corrupt at byte {offset} (not a JSON row); "
                        "start a fresh run without --resume"
                    )
                break  # the last line, cut short by a kill: dropped and re-run
            self.rows.setdefault(row.key, row)
            good_end = offset_next
            offset = offset_next
        if good_end < len(data):
            logger.info("dropping a partial last row of %s (%d bytes)", self.path, len(data) - good_end)
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)
        self.resumed = len(self.rows)

    def _clear(self) -> None:
        for name in RUN_OUTPUTS:
            target = self.out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    # ------------------------------------------------------------ writing

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def get(self, key: str) -> Row | None:
        return self.rows.get(key)

    def append(self, row: Row) -> Row:
        """Write one finished unit durably (flush + fsync) and remember it."""
        key = row.key
        if key in self.rows:
            return self.rows[key]
        self._write(row_line(row))
        self.rows[key] = row
        return row

    def _write(self, line: str) -> None:
        """Append one line durably; a failed write leaves at most a partial last line, which a resume drops."""
        self._handle.write(line)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows.values())

    def close(self) -> None:
        if not self._handle.closed:
            try:
                self._handle.close()
            except OSError as error:  # the buffered part of a failed write: a resume drops that partial line
                logger.debug("closing %s: %s", self.path, error)


def row_line(row: Row) -> str:
    """One line of ``results.jsonl``: strict JSON, no ``Infinity`` or ``NaN`` (:func:`strict_json`)."""
    return json.dumps(to_json(row), separators=(",", ":"), allow_nan=False) + "\n"


def write_config(out_dir: Path, config: dict[str, Any], config_hash: str) -> None:
    """``config.json``: the results format, the run's identity and its hash."""
    _atomic_write_json(Path(out_dir) / CONFIG, {"format": RESULTS_FORMAT, "hash": config_hash, "config": config})


def check_format(previous: dict[str, Any], out_dir: Path) -> None:
    """Refuse to resume a run written in another results format, naming both versions."""
    found = previous.get("format", 1)  # runs written before the format was versioned
    if found != RESULTS_FORMAT:
        raise InvalidParameterError(
            f"--resume: {str(out_dir)!r} holds results format {found}; this shieldkit reads format "
            f"{RESULTS_FORMAT} only: run without --resume (or use another --out) to start again"
        )


def read_rows(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete rows of a run's ``results.jsonl``, in their JSON form (a partial last line is ignored)."""
    rows = []
    with (Path(out_dir) / RESULTS).open(encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):
                rows.append(json.loads(line))
    return rows


def environment_record(seed: int, device: torch.device) -> dict[str, Any]:
    """Library versions, platform, device and seed: what a reader needs to reproduce a run."""
    from importlib import metadata

    def version(distribution: str) -> str | None:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return None

    from shieldkit.version import __version__

    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "shieldkit": __version__,
        "torch": torch.__version__,
        "numpy": version("numpy"),
        "adversarial-robustness-toolbox": version("adversarial-robustness-toolbox"),
        "torchattacks": version("torchattacks"),
        "matplotlib": version("matplotlib"),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "seed": seed,
        "command": sys.argv,
        "plugins": _plugins(),
    }


def _plugins() -> list[dict[str, Any]]:
    from shieldkit.plugins.registry import list_plugins

    return [
        {"name": p.name, "status": p.status, "distribution": p.distribution, "version": p.version}
        for p in list_plugins()
    ]


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    _atomic_write_json(path, value)


def _atomic_write_json(path: Path, value: Any) -> None:
    """Strict JSON: a non-finite number is ``null`` beside an ``x_nonfinite`` member (:func:`strict_json`)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(strict_json(value), indent=2, default=str, allow_nan=False) + "\n",
                         encoding="utf-8")
    os.replace(temporary, path)
