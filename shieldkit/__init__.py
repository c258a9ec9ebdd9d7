"""shieldkit: adversarial attacks and defences for PyTorch image classifiers, behind one registry.

Quickstart::

    import shieldkit as sk
    atk = sk.create_attack("pgd", eps=0.3)
    x_adv = atk(model, x, y)
"""

import importlib

from shieldkit.core.attack import Attack, AttackResult
from shieldkit.core.defense import (
    AttackView,
    DefendedModel,
    Defense,
    DetectorDefense,
    PostprocessDefense,
    TrainerDefense,
    TransformDefense,
)
from shieldkit.core.errors import (
    AttackContractError,
    DatasetNotFoundError,
    InvalidInputError,
    InvalidModelError,
    InvalidParameterError,
    MissingDependencyError,
    NoGradientError,
    PluginError,
    ShieldkitError,
    UnknownNameError,
)
from shieldkit.core.layers import Normalize
from shieldkit.core.threat import ThreatModel
from shieldkit.plugins.hookspecs import hookimpl
from shieldkit.plugins.registry import (
    attack_info,
    create_attack,
    create_dataset,
    create_defense,
    create_model,
    dataset_info,
    defense_info,
    list_attacks,
    list_datasets,
    list_defenses,
    list_models,
    list_plugins,
    model_info,
    register_plugin,
)
from shieldkit.version import __version__

# Subpackages imported on first attribute access, so `import shieldkit` stays light.
_LAZY_SUBMODULES = ("data", "models", "testing", "attacks", "defenses", "evaluation", "gan")
#: Public functions of those subpackages, imported the same way: ``shieldkit.evaluate`` is the function itself
#: (``inspect.signature`` shows its parameters).
_LAZY_FUNCTIONS = {"evaluate": "shieldkit.evaluation.api"}

__all__ = [
    "Attack",
    "AttackContractError",
    "AttackResult",
    "AttackView",
    "DatasetNotFoundError",
    "DefendedModel",
    "Defense",
    "DetectorDefense",
    "InvalidInputError",
    "InvalidModelError",
    "InvalidParameterError",
    "MissingDependencyError",
    "NoGradientError",
    "Normalize",
    "PluginError",
    "PostprocessDefense",
    "ShieldkitError",
    "ThreatModel",
    "TrainerDefense",
    "TransformDefense",
    "UnknownNameError",
    "__version__",
    "attack_info",
    "create_attack",
    "create_dataset",
    "create_defense",
    "create_model",
    "dataset_info",
    "defense_info",
    "evaluate",
    "hookimpl",
    "list_attacks",
    "list_datasets",
    "list_defenses",
    "list_models",
    "list_plugins",
    "model_info",
    "register_plugin",
]


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"shieldkit.{name}")
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(_LAZY_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'shieldkit' has no attribute {name!r}")
