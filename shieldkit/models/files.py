"""A user's model in a file: recognising such an argument, telling its format by content, and loading it safely.

``shieldkit evaluate --model`` and ``shieldkit train --model`` take a registered
model name, a factory (``pkg.module:build`` with ``--weights``) or a file. The
formats that cannot run code when they are read load by default:

- a ``torch.export`` program: ``torch.export.save(torch.export.export(model, (x,)), "m.pt2")``;
- TorchScript: ``torch.jit.save(torch.jit.script(model), "m.ts")`` (or ``torch.jit.trace``);
- a state dict with the factory that builds the network:
  ``torch.save(model.state_dict(), "w.pt")`` and ``--model pkg.module:build --weights w.pt``;
- what shieldkit itself writes (``shieldkit train``'s ``model.pt``, the evaluation's cache):
  a state dict with the spec that rebuilds the network.

A whole module pickled with ``torch.save(model, path)`` can run any code when
it is unpickled, so it loads only with ``trust_pickle=True`` (``--trust-pickle``)
and a warning. The format is read from the file's content (a zip archive's
members, then what ``torch.load(weights_only=True)`` accepts), never from its
name alone. Every state dict is read with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import importlib
import io
import logging
import os
import re
import sys
import textwrap
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shieldkit.core.errors import InvalidParameterError

logger = logging.getLogger(__name__)

__all__ = [
    "FILE_SUFFIXES",
    "SHIELDKIT_MODEL_FORMAT",
    "ExportedModel",
    "ScriptedModel",
    "build_from_spec",
    "build_with_weights",
    "file_format",
    "is_factory",
    "load_factory",
    "load_model_file",
    "load_state_dict_file",
    "looks_like_file",
    "save_atomically",
    "save_model",
]

#: File endings that mark an argument as a file rather than a registered name (models and tensor data).
FILE_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".jit", ".npz", ".safetensors")
#: The ``format`` entry of the model files shieldkit writes (a state dict and the spec that rebuilds it).
SHIELDKIT_MODEL_FORMAT = "shieldkit.model/1"
_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")

SAFE_FORMATS_HINT = (
    "save the model in a safe format instead: torch.export.save(torch.export.export(model, (x,)), 'm.pt2'), "
    "torch.jit.save(torch.jit.script(model), 'm.ts'), or torch.save(model.state_dict(), 'w.pt') with "
    "--model pkg.module:build --weights w.pt; or pass --trust-pickle if you trust this file (unpickling runs "
    "any code it holds)"
)


def looks_like_file(value: str | os.PathLike) -> bool:
    """Whether a ``--model`` or ``--data`` argument names a file or folder rather than a registered name:
    a known file ending, a folder part, or because it exists."""
    text = str(value)
    return Path(text).suffix.lower() in FILE_SUFFIXES or "/" in text or os.sep in text or Path(text).exists()


def is_factory(value: str) -> bool:
    """Whether ``value`` spells a factory, ``pkg.module:function``."""
    return isinstance(value, str) and bool(_FACTORY.match(value)) and not looks_like_file(value)


# ---------------------------------------------------------------- formats


def file_format(path: str | os.PathLike) -> str:
    """What the file holds, from its content: ``"export"``, ``"torchscript"``, ``"shieldkit_model"`` (a
    state dict with its spec), ``"state_dict"``, ``"pickle"`` (code: a whole pickled module or other
    object) or ``"unknown"``. Nothing in the file is executed to find out."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
        tails = {name.split("/", 1)[1] if "/" in name else name for name in members}
        if "archive_format" in tails or any(t.startswith("models/") and t.endswith(".json") for t in tails):
            return "export"
        if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
            return "torchscript"
        if "data.pkl" not in tails:
            return "unknown"
    elif not _looks_like_pickle(path):
        return "unknown"
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - the restricted unpickler refused: it holds code or objects
        return "pickle"
    if isinstance(content, Mapping) and content.get("format") == SHIELDKIT_MODEL_FORMAT:
        return "shieldkit_model"
    if isinstance(content, Mapping) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
        return "state_dict"
    return "unknown"


def _looks_like_pickle(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80  # a pickle's PROTO opcode (torch's legacy, non-zip format)


# ---------------------------------------------------------------- loading


def load_model_file(path: str | os.PathLike, what: str = "--model", *, trust_pickle: bool = False) -> nn.Module:
    """The model saved in ``path``, in eval mode; a one-line error naming ``what`` otherwise.

    Raises:
        FileNotFoundError: no such file.
        InvalidParameterError: a pickled module without ``trust_pickle``, a bare state dict (it needs
            its factory), or a file that holds no model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file {str(path)!r}")
    kind = file_format(path)
    try:
        if kind == "export":
            model: nn.Module = ExportedModel(torch.export.load(str(path)))
        elif kind == "torchscript":
            model = ScriptedModel(torch.jit.load(str(path), map_location="cpu"))
        elif kind == "shieldkit_model":
            model = build_from_spec(torch.load(path, map_location="cpu", weights_only=True), what,
                                    trust_pickle=trust_pickle)
        elif kind == "pickle":
            if not trust_pickle:
                raise InvalidParameterError(f"{what}: {str(path)!r} is a pickle (torch.save(model)), which can run "
                                            f"any code when loaded, so it is refused; {SAFE_FORMATS_HINT}")
            logger.warning("%s: unpickling %s with --trust-pickle: this runs any code the file holds", what, path)
            model = torch.load(path, map_location="cpu", weights_only=False)
        elif kind == "state_dict":
            raise InvalidParameterError(f"{what}: {str(path)!r} holds a state dict, not a model; give the factory "
                                        f"that builds the network: --model pkg.module:build --weights {path}")
        else:
            raise InvalidParameterError(f"{what}: {str(path)!r} holds no model shieldkit can read (formats: "
                                        "torch.export .pt2, TorchScript, a state dict with its factory)")
    except (InvalidParameterError, FileNotFoundError):
        raise
    except Exception as error:  # noqa: BLE001 - any unreadable file is a usage error
        raise InvalidParameterError(f"{what}: cannot load {str(path)!r}: {_first_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"{what}: {str(path)!r} holds a {type(model).__name__}, not a model")
    return model.eval()


def load_factory(spec: str, what: str = "--model") -> Callable[..., nn.Module]:
    """The function ``pkg.module:build`` names (importing its module, which is the user's own code).

    The module is looked for in the current folder first, then on ``sys.path``, as ``python -m``
    does: ``./pkg/module.py`` is found without ``PYTHONPATH=.``.
    """
    if not is_factory(spec):
        raise InvalidParameterError(f"{what}: expected a factory as pkg.module:function, got {spec!r}")
    module_name, _, attribute = spec.partition(":")
    try:
        module = _import_from_current_folder(module_name)
    except ImportError as error:
        raise InvalidParameterError(f"{what}: cannot import {module_name!r} for {spec!r} (looked in the current "
                                    f"folder {os.getcwd()!r}, then sys.path): {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise InvalidParameterError(f"{what}: {module_name!r} has no function {attribute!r}")
    return factory


def _import_from_current_folder(module_name: str) -> Any:
    """``importlib.import_module`` with the current folder first on ``sys.path`` for this import only.

    Users run ``shieldkit`` from their project's folder and expect their package to be found there, as
    ``python -m`` finds it; the entry point script puts only its own folder on the path. The folder is
    taken off again afterwards, so that it shadows nothing imported later.
    """
    folder = os.getcwd()
    sys.path.insert(0, folder)
    importlib.invalidate_caches()  # a module written since the interpreter started (a test, a notebook)
    try:
        return importlib.import_module(module_name)
    finally:
        try:
            sys.path.remove(folder)  # the first occurrence: ours, unless the module put the same folder first
        except ValueError:  # the module took it off itself
            pass


#: lines of torch's state-dict error kept in the one-line message (each a key with its shapes, or a key list)
_MISMATCH_LINES = 3
_TORCH_SIZE = re.compile(r"torch\.Size\((\[[^\]]*\])\)")


def _state_dict_mismatch(error: BaseException, lines: int = _MISMATCH_LINES) -> str:
    """torch's ``load_state_dict`` error on one line: its first details (a mismatched key and both shapes, the
    missing or unexpected keys), not the heading ``Error(s) in loading state_dict for Net:`` alone."""
    text = str(error).strip()
    heading, *details = [line.strip() for line in text.splitlines() if line.strip()] or [type(error).__name__]
    if not details:
        return heading
    # torch.Size([10, 64]) reads as [10, 64]; a long key list is shortened, not the line count grown
    shown = [textwrap.shorten(_TORCH_SIZE.sub(r"\1", line).rstrip(". "), 300, placeholder=" …")
             for line in details[:lines]]
    more = f" (and {len(details) - lines} more)" if len(details) > lines else ""
    return "; ".join(shown) + more


def load_state_dict_file(path: str | os.PathLike, what: str = "--weights") -> dict[str, torch.Tensor]:
    """A state dict read with ``weights_only=True`` (a shieldkit model file gives its state dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file {str(path)!r}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise InvalidParameterError(f"{what}: {str(path)!r} is not a state dict saved with "
                                    f"torch.save(model.state_dict(), path): {_first_line(error)}") from None
    if isinstance(content, Mapping) and content.get("format") == SHIELDKIT_MODEL_FORMAT:
        content = content["state_dict"]
    if not isinstance(content, Mapping) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise InvalidParameterError(f"{what}: {str(path)!r} holds a {type(content).__name__}, not a state dict "
                                    "(name -> tensor)")
    return dict(content)


def build_with_weights(factory: str, weights: str | os.PathLike | None, kwargs: Mapping[str, Any] | None = None,
                       what: str = "--model") -> nn.Module:
    """``factory(**kwargs)`` with the state dict in ``weights`` loaded into it (strictly)."""
    kwargs = dict(kwargs or {})
    state = load_state_dict_file(weights, "--weights") if weights is not None else None
    try:
        model = load_factory(factory, what)(**kwargs)
    except InvalidParameterError:
        raise
    except Exception as error:  # noqa: BLE001 - the user's factory failed on these arguments
        raise InvalidParameterError(f"{what}: {factory}(**{kwargs}) failed: {_first_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(f"{what}: {factory} returned a {type(model).__name__}, not an nn.Module")
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            logger.debug("--weights: torch's whole message: %s", error)  # every line, under -v
            raise InvalidParameterError(f"--weights: {str(weights)!r} does not fit {factory}(**{kwargs}): "
                                        f"{_state_dict_mismatch(error)}") from None
    return model.eval()


def build_from_spec(content: Mapping[str, Any], what: str = "--model", *, trust_pickle: bool = False) -> nn.Module:
    """Rebuild a model shieldkit saved (:func:`save_model`): its spec builds the network, then its weights."""
    spec = content.get("spec", {})
    if "name" in spec:
        from shieldkit.plugins.registry import create_model

        model = create_model(spec["name"], **dict(spec.get("params", {})))
    elif "factory" in spec:
        model = build_with_weights(spec["factory"], None, spec.get("kwargs"), what)
    elif "base" in spec:
        model = load_model_file(spec["base"], f"{what} (its base model)", trust_pickle=trust_pickle)
    else:
        raise InvalidParameterError(f"{what}: the model file's spec names no network to rebuild: {dict(spec)}")
    try:
        model.load_state_dict(content["state_dict"])
    except RuntimeError as error:
        logger.debug("%s: torch's whole message: %s", what, error)  # every line, under -v
        raise InvalidParameterError(f"{what}: the saved weights do not fit {dict(spec)}: "
                                    f"{_state_dict_mismatch(error)}") from None
    return model.eval()


# ---------------------------------------------------------------- saving


def save_model(model: nn.Module, path: str | os.PathLike, spec: Mapping[str, Any]) -> Path:
    """Write ``model``'s state dict with the ``spec`` that rebuilds its network (``{"name", "params"}`` of
    a registered model, ``{"factory", "kwargs"}``, or ``{"base": a model file}``); loadable with
    ``weights_only=True`` and by :func:`load_model_file`."""
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    return save_atomically({"format": SHIELDKIT_MODEL_FORMAT, "spec": dict(spec), "state_dict": state}, path)


def save_atomically(value: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to memory, then to a temporary file in the same folder, then rename.

    Serialising to memory first means a full disk fails as an ``OSError`` (``ENOSPC``) from the
    write, rather than as torch's ``RuntimeError`` from deep inside its zip writer; the rename
    means an interrupted write never leaves a half-written file.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(value, buffer)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- exported programs


class ExportedModel(nn.Module):
    """A ``torch.export`` program as a module the evaluation can attack.

    The program's module refuses ``train()``/``eval()`` (its graph was fixed when it was exported,
    in whatever mode the model was in), but the state guard switches modes around every attack.
    Here ``train(mode)`` only sets the flags; the graph runs as exported, so export in eval mode.
    A program exported with a fixed batch size (``torch.export.export(model, (x,))`` without
    ``dynamic_shapes``) is run on batches of that size, the last one padded.
    """

    def __init__(self, program: Any):
        super().__init__()
        self.program = program.module()
        self.batch_size = _static_batch_size(program)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.batch_size
        if size is None or x.shape[0] == size:
            return self.program(x)
        pieces = []
        for start in range(0, x.shape[0], size):
            piece = x[start:start + size]
            missing = size - piece.shape[0]
            if missing:  # pad with copies of the last image; their outputs are dropped
                piece = torch.cat([piece, piece[-1:].expand(missing, *piece.shape[1:])])
            pieces.append(self.program(piece)[:size - missing])
        return torch.cat(pieces)

    def train(self, mode: bool = True) -> ExportedModel:
        for module in self.modules():
            module.training = mode  # the flag only: the exported module's own train() raises
        return self


class ScriptedModel(nn.Module):
    """A TorchScript module behind a plain ``nn.Module``.

    A ScriptModule's own parameter tables are not Python dicts, which the code that walks a
    model's modules (the state guard) expects. Here the script module is held outside the module
    tree; its parameters become ``nn.Parameter`` objects set back into it, and they and its
    buffers (the same tensor objects) are this module's own (dots in their names become ``__``),
    so freezing, moving, digesting, training and loading weights act on the scripted network.
    """

    def __init__(self, script: Any):
        super().__init__()
        object.__setattr__(self, "script", script)  # not a registered child: see the class docstring
        for name, tensor in list(script.named_parameters()):
            owner, _, attribute = name.rpartition(".")
            parameter = nn.Parameter(tensor.detach(), requires_grad=tensor.requires_grad)
            setattr(_submodule(script, owner), attribute, parameter)
            self.register_parameter(name.replace(".", "__"), parameter)
        for name, buffer in script.named_buffers():
            self.register_buffer(name.replace(".", "__"), buffer)
        self.training = script.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.script(x)

    def train(self, mode: bool = True) -> ScriptedModel:
        self.script.train(mode)
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        result = super()._apply(fn, recurse)
        # Where a conversion made new tensor objects (not in place), hand them to the script module too.
        for table in (self._parameters, self._buffers):
            for name, tensor in table.items():
                owner, _, attribute = name.replace("__", ".").rpartition(".")
                setattr(_submodule(self.script, owner), attribute, tensor)
        return result

    def __deepcopy__(self, memo: dict) -> ScriptedModel:
        clone = ScriptedModel(copy.deepcopy(self.script, memo))
        clone.train(self.training)
        memo[id(self)] = clone
        return clone


def _submodule(module: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        module = getattr(module, part)
    return module


def _static_batch_size(program: Any) -> int | None:
    """The batch size a program was exported with, or ``None`` if its batch dimension is dynamic."""
    inputs = [node for node in program.graph.nodes if node.op == "placeholder"
              and node.name in program.graph_signature.user_inputs]
    value = inputs[0].meta.get("val") if inputs else None
    if value is None or not hasattr(value, "shape") or not value.shape:
        return None
    first = value.shape[0]
    return int(first) if isinstance(first, int) else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
