"""Plugins found by real entry points in installed distributions (subprocesses, no faked metadata)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "plugins" / "shieldkit-example"


def shieldkit(*args: str, env: dict | None = None, check: bool = True,
              python: str | os.PathLike = sys.executable) -> subprocess.CompletedProcess:
    """Run the ``shieldkit`` command in a fresh interpreter (``python``: the tests' own by default)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SHIELDKIT_") or k == "SHIELDKIT_DATA"}
    environment.pop("PYTHONPATH", None)
    environment.update(env or {})
    result = subprocess.run([str(python), "-m", "shieldkit", *args], capture_output=True, text=True,
                            env=environment, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"shieldkit {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def attack_names(env: dict | None = None, python: str | os.PathLike = sys.executable) -> set[str]:
    listed = shieldkit("list", "attacks", "--json", env=env, python=python).stdout
    return {record["name"] for record in json.loads(listed)}


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args],
                   check=True, capture_output=True, timeout=300)


def _environment_without_the_example(root: Path) -> Path:
    """A throwaway venv that sees every package of the live one except shieldkit-example; its python.

    The live environment may hold the example plugin (``make plugin`` installs it), and a directory on
    sys.path cannot hide one distribution, so the venv's site-packages links each entry of the live
    site-packages but the example's package and dist-info. Nothing of the live environment is written.
    """
    live = Path(sysconfig.get_paths()["purelib"])
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    for entry in live.iterdir():
        if not entry.name.lower().startswith(("shieldkit_example", "shieldkit-example")):
            (site / entry.name).symlink_to(entry)
    return python


def _live_distributions() -> dict[str, str]:
    live = Path(sysconfig.get_paths()["purelib"])
    return {entry.name: str(entry.stat().st_mtime_ns) for entry in live.iterdir()}


def test_pip_install_makes_the_plugin_appear_and_removing_it_makes_it_go(tmp_path):
    live_before = _live_distributions()
    python = _environment_without_the_example(tmp_path / "venv")
    assert "fgsm.native" in (before := attack_names(python=python))
    assert "salt_pepper.example" not in before, "the example plugin is visible before it is installed"
    # A real pip install of the plugin's source (copied, so no build folder lands in the checkout),
    # into a target folder; an interpreter sees it when the folder is on its path, as a user's would.
    source, target = tmp_path / "source", tmp_path / "target"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip("install", "--no-deps", "--no-build-isolation", "--target", str(target), str(source))
    assert (target / "shieldkit_example-0.1.0.dist-info" / "entry_points.txt").is_file()
    installed = {"PYTHONPATH": str(target)}
    names = attack_names(installed, python=python)
    assert "salt_pepper.example" in names and "fgsm.native" in names
    assert "salt_pepper.example" in shieldkit("list", "attacks", env=installed, python=python).stdout
    info = json.loads(shieldkit("info", "salt_pepper", "--json", env=installed, python=python).stdout)
    assert info["distribution"] == "shieldkit-example" and info["version"] == "0.1.0"
    # Its shieldkit_run_finished hook: one CSV line per finished `shieldkit evaluate`, none for a rebuild.
    runs = tmp_path / "runs.csv"
    tracked = {**installed, "SHIELDKIT_EXAMPLE_RUNS_CSV": str(runs)}
    evaluate = _tiny_evaluation(tmp_path)
    shieldkit(*evaluate(tmp_path / "first"), env=tracked, python=python)
    shieldkit(*evaluate(tmp_path / "second"), env=tracked, python=python)
    shieldkit("report", str(tmp_path / "first"), env=tracked, python=python)
    lines = runs.read_text().splitlines()
    assert lines[0].startswith("finished,run,data,n,norm,eps,defenses")
    assert [line.split(",")[1] for line in lines[1:]] == [str(tmp_path / "first"), str(tmp_path / "second")]
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert lines[1].split(",")[-1] == repr(summary["defenses"][0]["eps"]["0.1"]["adaptive"])
    # Removing the installed folder from the path is uninstalling it: the entry point is gone.
    assert "salt_pepper.example" not in attack_names(python=python)
    assert _live_distributions() == live_before, "the test changed the live environment"


def _tiny_evaluation(folder: Path):
    """A linear model saved as a torch.export program in ``folder``; the arguments of a seconds-long
    `shieldkit evaluate` of it into a given output folder."""
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()
    path = folder / "linear.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 1, 28, 28),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), path)
    return lambda out: ("evaluate", "--model", str(path), "--data", "digits", "--attacks", "fgsm", "--eps", "0.1",
                        "--n", "8", "--naive-only", "--quiet", "--out", str(out))


def _distribution(root: Path, name: str, module_source: str, entry_name: str | None = None) -> None:
    """Lay out an installed distribution: a module plus its dist-info with an entry point."""
    module = name.replace("-", "_")
    (root / f"{module}.py").write_text(module_source)
    info = root / f"{module}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[shieldkit]\n{entry_name or module} = {module}\n")


@pytest.fixture
def broken_site(tmp_path):
    _distribution(tmp_path, "broken-import", "import does_not_exist_anywhere\n", "broken_import")
    _distribution(tmp_path, "raising-hook", (
        "import shieldkit as sk\n"
        "@sk.hookimpl\n"
        "def register_attacks(register):\n"
        "    raise RuntimeError('hook exploded')\n"
    ), "raising_hook")
    _distribution(tmp_path, "wrong-type", (
        "import shieldkit as sk\n"
        "@sk.hookimpl\n"
        "def register_defenses(register):\n"
        "    register('not a class')\n"
    ), "wrong_type")
    _distribution(tmp_path, "twin-plugin", (
        "import shieldkit as sk\n"
        "class Twin(sk.Attack):\n"
        "    family = 'twin'\n"
        "    def _run(self, model, x, y, target):\n"
        "        return x\n"
        "@sk.hookimpl\n"
        "def register_attacks(register):\n"
        "    register(Twin)\n"
        "    register(Twin)\n"
    ), "twin")
    return {"PYTHONPATH": str(tmp_path)}


def test_broken_plugins_are_reported_and_the_rest_keeps_working(broken_site):
    plugins = {p["name"]: p for p in json.loads(shieldkit("plugins", "--json", env=broken_site).stdout)}
    broken = plugins["broken_import"]
    assert broken["status"] == "failed"
    assert (broken["distribution"], broken["version"]) == ("broken-import", "1.2.3")
    assert "No module named 'does_not_exist_anywhere'" in broken["errors"][0]
    assert plugins["raising_hook"]["status"] == "failed" and "hook exploded" in plugins["raising_hook"]["errors"][0]
    assert "expected a subclass of shieldkit.Defense" in plugins["wrong_type"]["errors"][0]
    assert plugins["twin"]["registered"] == ["twin.twin"] and "already registered" in plugins["twin"]["errors"][0]
    assert plugins["example"]["status"] == "ok"
    names = attack_names(broken_site)
    assert {"fgsm.native", "salt_pepper.example", "twin.twin"} <= names
    table = shieldkit("plugins", env=broken_site).stdout
    assert "broken-import 1.2.3" in table and "failed" in table


def test_allow_and_block_lists_and_no_plugins(broken_site):
    only_example = attack_names({**broken_site, "SHIELDKIT_PLUGINS": "example"})
    assert "salt_pepper.example" in only_example and "twin.twin" not in only_example
    blocked = attack_names({**broken_site, "SHIELDKIT_BLOCK_PLUGINS": "example,twin"})
    assert "salt_pepper.example" not in blocked and "twin.twin" not in blocked
    none = attack_names({**broken_site, "SHIELDKIT_NO_PLUGINS": "1"})
    assert "fgsm.native" in none and not any(n.endswith((".example", ".twin")) for n in none)
    plugins = {p["name"]: p for p in json.loads(shieldkit("plugins", "--json", env={
        **broken_site, "SHIELDKIT_PLUGINS": "example"}).stdout)}
    assert plugins["twin"]["status"] == "blocked" and "SHIELDKIT_PLUGINS" in plugins["twin"]["errors"][0]


def test_strict_mode_fails_loudly(broken_site):
    result = shieldkit("list", "attacks", env={**broken_site, "SHIELDKIT_STRICT_PLUGINS": "1"}, check=False)
    assert result.returncode == 1
    assert "broken_import" in result.stderr and "SHIELDKIT_STRICT_PLUGINS=1" in result.stderr


def test_tracing_logs_loading_and_hooks():
    result = shieldkit("list", "attacks", env={"SHIELDKIT_TRACE_PLUGINS": "1"})
    assert "loaded plugin example" in result.stderr
    assert "register_attacks" in result.stderr


def test_import_shieldkit_does_not_import_backends_or_torchvision():
    code = (
        "import sys, shieldkit\n"
        "shieldkit.list_attacks()\n"
        "heavy = [m for m in ('art', 'torchattacks', 'torchvision') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == ""
