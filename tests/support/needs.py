"""Test dependencies that must be there: a missing one fails its test, saying how to get it, never skips.

``make test`` installs every one of them (``.[all]`` and the system's Chromium), so under it a skip
would only hide a broken setup.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest

MAKE_TEST = "`make test` installs it"


def need(module: str, install: str) -> ModuleType:
    """Import ``module`` or fail the test naming the package that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pytest.fail(f"{module} is missing ({error}): {install}; {MAKE_TEST}", pytrace=False)


def need_chromium() -> str:
    """The Chromium to drive: $SHIELDKIT_CHROMIUM, else the system's (Debian package ``chromium``)."""
    found = os.environ.get("SHIELDKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("no Chromium on PATH: `sudo apt-get install -y --no-install-recommends chromium` "
                    f"(Debian's package; `make browser` does it) or set SHIELDKIT_CHROMIUM; {MAKE_TEST}",
                    pytrace=False)
    return found
