"""The main job from a bare install: the built wheel, torch and shieldkit's hard dependencies, nothing else.

The wheel is built from this checkout (``pip wheel --no-deps --no-build-isolation``)
and installed with ``--no-deps --no-index`` into a fresh virtualenv
(``python -m venv --without-pip``; this venv's pip installs into it with ``--python``).

How torch gets there: a local torch wheel exists on the development machines, but
installing it costs about 55 s (877 MB unpacked, measured on 2 shared cores), half
this file's budget, and it is not on every machine. So the fresh virtualenv sees
torch through a ``.pth`` file pointing at a folder that holds only symlinks: to
torch, to the requirements its metadata names (recursively), and the same for
shieldkit's hard dependencies, read from the built wheel's ``Requires-Dist``
without extras. Each link is a top-level entry of the distribution's RECORD
(packages, modules, ``.dist-info``), taken from this venv's site-packages.
Everything shieldkit imports beyond that list fails in the fresh virtualenv,
so a dependency that should be hard but is an extra (or missing) shows here.

The demo's reference model and generator are trained once per machine and
reused (``$SHIELDKIT_CACHE``, else ``~/.cache/shieldkit``: what a user's run
uses too); the first run on a machine trains them (minutes), later runs load them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
#: optional libraries the main job can reach; none may be importable in the bare environment
OPTIONAL = ("sklearn", "matplotlib", "torchattacks", "art", "playwright", "scipy", "PIL", "cv2", "kornia")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _hard_requirements(wheel: Path) -> list[Requirement]:
    """The wheel's ``Requires-Dist`` entries that apply without any extra."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    requirements = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def _closure(requirements: list[Requirement]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions these requirements need, recursively (markers evaluated here, no extras)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [r.name for r in requirements]
    while pending:
        name = pending.pop()
        if _key(name) in found:
            continue
        distribution = importlib.metadata.distribution(name)
        found[_key(name)] = distribution
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def _link_distributions(distributions: dict[str, importlib.metadata.Distribution], folder: Path) -> None:
    """Symlink each distribution's top-level entries (packages, modules, .dist-info) into ``folder``."""
    folder.mkdir()
    for distribution in distributions.values():
        tops = {Path(f).parts[0] for f in distribution.files or [] if Path(f).parts}
        for top in sorted(tops):
            # '..' holds console scripts; a .pth file would only be read from a site directory anyway
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            source = Path(distribution.locate_file(top))
            if source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)


def _run(command: list[str], env: dict[str, str], timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A fresh virtualenv with the built wheel, torch and shieldkit's hard dependencies: (python, env, wheel)."""
    root = tmp_path_factory.mktemp("bare-install")
    source = root / "src"
    shutil.copytree(REPO / "shieldkit", source / "shieldkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(root / "dist")], check=True, capture_output=True, text=True)
    (wheel,) = (root / "dist").glob("shieldkit-*.whl")

    links = root / "site-links"
    _link_distributions(_closure(_hard_requirements(wheel)), links)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site_packages,) = (venv / "lib").glob("python*/site-packages")
    (site_packages / "bare-install-dependencies.pth").write_text(f"{links}\n")
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, text=True)

    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return venv / "bin" / "python", env, wheel


def test_the_wheel_carries_the_digits_and_no_scikit_learn_dependency(bare):
    _, _, wheel = bare
    with zipfile.ZipFile(wheel) as archive:
        assert archive.getinfo("shieldkit/data/digits.npz").file_size > 40_000
    hard = {_key(r.name) for r in _hard_requirements(wheel)}
    assert hard == {"torch", "pluggy", "numpy", "tqdm"}


def test_the_bare_environment_has_none_of_the_optional_libraries(bare, tmp_path):
    python, env, _ = bare
    probe = ("import importlib.metadata, importlib.util, json; "
             f"print(json.dumps([m for m in {OPTIONAL!r} if importlib.util.find_spec(m)]), "
             "importlib.metadata.version('torch'))")
    done = _run([str(python), "-c", probe], env, 120, tmp_path)
    assert done.returncode == 0, done.stderr
    present, torch_version = done.stdout.split()
    assert present == "[]"
    assert torch_version == importlib.metadata.version("torch")


def test_import_and_create_attack_work_from_a_bare_install(bare, tmp_path):
    python, env, _ = bare
    script = ("import shieldkit, torch; attack = shieldkit.create_attack('pgd', eps=0.1, steps=2); "
              "model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)); "
              "x = torch.rand(4, 1, 8, 8); y = torch.arange(4); "
              "result = attack.run(model, x, y); "
              "print(shieldkit.__file__, type(attack).__module__, float(result.linf.max()))")
    done = _run([str(python), "-c", script], env, 120, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    location, module, linf = done.stdout.split()
    # Imported from the installed wheel, not from this checkout.
    assert Path(location).is_relative_to(python.parent.parent)
    assert module == "shieldkit.attacks.pgd" and float(linf) <= 0.1 + 1e-6


def test_the_demo_runs_from_a_bare_install(bare, tmp_path):
    python, env, _ = bare
    out = tmp_path / "demo"
    # One eps instead of the demo's three, as the demo test in test_evaluate.py does: the same suite, every
    # defence and the same code paths at a third of the attack time (the three take ~18 min on a loaded
    # 2-core machine, 466 s of them Defense-GAN's projections).
    command = [str(python.parent / "shieldkit"), "evaluate", "--n", "20", "--eps", "0.3", "--quiet", "--out", str(out)]
    done = _run(command, env, 1800, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for name in ("report.md", "report.html", "summary.json", "results.jsonl"):
        assert (out / name).is_file(), name
    assert "Robust accuracy (%)" in done.stdout
    lines = done.stderr.splitlines()
    # Without matplotlib: one line, naming the extra that brings the plots.
    plots = [line for line in lines if "plots" in line]
    assert len(plots) == 1 and "shieldkit[report]" in plots[0], plots
    assert not list((out / "plots").glob("*.png")) and ".png" not in (out / "report.md").read_text()
    # The missing backends: said on a line each at most, and the demo goes on with the native attacks.
    for library in ("torchattacks", "ART"):
        assert len([line for line in lines if library in line and ("available" in line or "installed" in line)]) == 1, (library, lines[:20])
    summary = json.loads((out / "summary.json").read_text())
    assert {attack["name"].split(".")[1] for attack in summary["attacks"]} == {"native"}
