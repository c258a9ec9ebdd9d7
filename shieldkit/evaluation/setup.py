"""What was measured, named for the report's header: the model, the data, the device and the versions.

:func:`describe_run` reads them once, when the run starts, into a :class:`RunSetup`
(plain data in ``plan.json`` and ``summary.json``), so a report rebuilt from disk
names them too.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import torch
from torch import nn

from shieldkit.core.layers import Normalize
from shieldkit.core.outputs import LogitsOutput
from shieldkit.data.imagedata import ImageData
from shieldkit.data.streamed import StreamedData
from shieldkit.evaluation.config import EvalConfig
from shieldkit.evaluation.summaries import DataSetup, ModelSetup, RunSetup

__all__ = ["describe_run", "model_source"]

#: The libraries whose versions a reader needs to reproduce a run, by distribution name.
_VERSIONED = ("torch", "torchattacks", "adversarial-robustness-toolbox", "numpy")


def describe_run(config: EvalConfig, model: nn.Module, data: ImageData | StreamedData, *, total: int,
                 handed_over_in: str, output: str, digest: str, device: torch.device) -> RunSetup:
    """The run's :class:`RunSetup` (``total``: the samples of the set the evaluated ones were drawn from)."""
    from shieldkit.version import __version__

    versions: dict[str, str | None] = {"shieldkit": __version__, "python": sys.version.split()[0]}
    for distribution in _VERSIONED:
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = None
    inner = model.model if isinstance(model, LogitsOutput) else model
    return RunSetup(
        model=ModelSetup(source=model_source(config.model), architecture=architecture(inner), digest=digest,
                         parameters=sum(p.numel() for p in inner.parameters()), output=output,
                         handed_over_in=handed_over_in, normalization=normalization(config.model, inner)),
        data=DataSetup(name=data.name, split=data.split, n=len(data), total=total, shape=list(data.shape),
                       classes=data.num_classes),
        device=str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        precision=config.precision, batch_size=int(config.batch_size), versions=versions,
        started=datetime.now(timezone.utc).isoformat(timespec="seconds"), clean_floor=config.min_clean_accuracy)


def model_source(spec: dict[str, Any]) -> str:
    """Where the model came from, from the configuration's ``[model]`` table (empty: handed over in Python)."""
    if "path" in spec:
        return f"file {spec['path']}"
    if "factory" in spec:
        weights = spec.get("weights")
        return f"factory {spec['factory']}" + (f" with weights {weights}" if weights else " with random weights")
    if "name" in spec:
        return f"registered {spec['name']}"
    return "Python object"


def architecture(model: nn.Module) -> str:
    """The model's class; a ``Sequential``'s children's classes (``Sequential(Normalize, ResNet)``)."""
    if isinstance(model, nn.Sequential):
        names = [type(child).__name__ for child in model.children()]
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        return f"Sequential({shown})"
    return type(model).__name__


def normalization(spec: dict[str, Any], model: nn.Module) -> str:
    """The normalisation the run put in front of the model, else a ``Normalize`` found inside it, else none."""
    given = spec.get("normalize")
    if given:
        return f"mean {_values(given['mean'])} / std {_values(given['std'])} (--normalize)"
    found = next((module for module in model.modules() if isinstance(module, Normalize)), None)
    if found is not None:
        return f"mean {_values(found.mean.flatten().tolist())} / std {_values(found.std.flatten().tolist())} (inside the model)"
    return "none found in the model (its own forward may normalise)"


def _values(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
