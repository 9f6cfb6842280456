"""Finding optimizers by name, by ``module:attribute``, or by file path.

An optimizer spec is a string::

    NAME[:key=value[,key=value...]]

``NAME`` is a registered name (``nnopt optimizers`` lists them), a
``package.module:attribute``, or a path to a ``.py`` file (optionally
``file.py:attribute``; without an attribute the file must define
``optimizer`` or ``Optimizer``). If the object found is a class or a
factory function, it is called with the hyperparameters; values are read as
JSON where they parse (``lr=3e-3``, ``nesterov=true``) and as text otherwise.

A spec may also be ``@FILE.json[:key=value,...]``: the file holds
``{"ref": NAME, "hparams": {...}}`` (``"optimizer"`` is accepted in place of
``"ref"``), as ``nnopt tune`` writes to ``best.json``; hyperparameters after
the colon override the file's.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnopt.api import ChallengeOptimizer, HookError, check_optimizer

__all__ = [
    "OptimizerEntry",
    "OptimizerSpec",
    "list_optimizers",
    "load_optimizer",
    "parse_spec",
    "register",
]


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer."""

    name: str
    factory: Callable[..., ChallengeOptimizer]
    description: str
    requires: str | None = None  # pip extra needed, e.g. "nnopt[extras]"


@dataclass(frozen=True)
class OptimizerSpec:
    """A resolved optimizer reference plus its hyperparameters."""

    ref: str
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.hparams:
            return self.ref
        args = ",".join(f"{k}={json.dumps(v)}" for k, v in self.hparams.items())
        return f"{self.ref}:{args}"

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "hparams": dict(self.hparams)}


_REGISTRY: dict[str, OptimizerEntry] = {}


def register(
    name: str,
    factory: Callable[..., ChallengeOptimizer],
    description: str,
    *,
    requires: str | None = None,
) -> None:
    """Add an optimizer to the registry under ``name``."""
    _REGISTRY[name] = OptimizerEntry(name, factory, description, requires)


def list_optimizers() -> list[OptimizerEntry]:
    _ensure_builtins()
    return sorted(_REGISTRY.values(), key=lambda e: e.name)


def _ensure_builtins() -> None:
    if not _REGISTRY:
        importlib.import_module("nnopt.optimizers.builtin")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split_items(text: str) -> list[str]:
    """Split ``k=v,k2=v2`` on the commas outside brackets (``betas=[0.9,0.99]``)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def parse_spec(spec: str | OptimizerSpec, **extra: Any) -> OptimizerSpec:
    """Split ``NAME[:k=v,...]`` into reference and hyperparameters."""
    if isinstance(spec, OptimizerSpec):
        return OptimizerSpec(spec.ref, {**spec.hparams, **extra})
    text = spec.strip()
    if not text:
        raise ValueError("optimizer spec is empty; try 'adam' or 'adam:lr=1e-3'")
    if text.startswith("@"):
        inline = parse_spec(text[1:])
        ref, hparams = _read_spec_file(Path(inline.ref))
        return OptimizerSpec(ref, {**hparams, **inline.hparams, **extra})
    ref, hparams = text, {}
    head, sep, tail = text.rpartition(":")
    if sep and "=" in tail:
        ref = head
        for item in _split_items(tail):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ValueError(
                    f"bad hyperparameter {item!r} in optimizer spec {spec!r}; "
                    "write key=value, e.g. adam:lr=1e-3,weight_decay=0.01"
                )
            hparams[key.strip()] = _parse_value(value.strip())
    return OptimizerSpec(ref, {**hparams, **extra})


def _read_spec_file(path: Path) -> tuple[str, dict[str, Any]]:
    """The reference and hyperparameters an ``@FILE.json`` spec names."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read optimizer file @{path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"optimizer file @{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"optimizer file @{path} must hold a JSON object")
    ref = data.get("ref", data.get("optimizer"))
    if not isinstance(ref, str) or not ref.strip() or ref.strip().startswith("@"):
        raise ValueError(
            f'optimizer file @{path} needs a "ref" naming an optimizer '
            f'(e.g. "adam"), got {ref!r}'
        )
    hparams = data.get("hparams", {})
    if not isinstance(hparams, dict):
        raise ValueError(
            f'"hparams" in optimizer file @{path} must be a JSON object, '
            f"got {hparams!r}"
        )
    return ref.strip(), hparams


def _load_file(path: Path, attribute: str | None) -> Any:
    if not path.is_file():
        raise ValueError(f"optimizer file {path} does not exist")
    module_name = f"_nnopt_user_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    names = [attribute] if attribute else ["optimizer", "Optimizer"]
    for name in names:
        if hasattr(module, name):
            return getattr(module, name)
    raise ValueError(
        f"{path} defines none of {', '.join(names)}; name the object with "
        f"{path}:ATTRIBUTE"
    )


def _resolve(ref: str) -> tuple[Any, bool]:
    """The object a reference names, and whether it is a registry factory."""
    _ensure_builtins()
    if ref in _REGISTRY:
        return _REGISTRY[ref].factory, True
    path_part, _, attribute = ref.partition(".py:")
    if ref.endswith(".py") or attribute:
        path = Path(ref if ref.endswith(".py") else path_part + ".py")
        return _load_file(path, attribute or None), False
    if ":" in ref:
        module_name, _, attribute = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"cannot import module {module_name!r}: {exc}") from exc
        try:
            return getattr(module, attribute), False
        except AttributeError:
            raise ValueError(
                f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    known = ", ".join(sorted(_REGISTRY))
    raise ValueError(
        f"unknown optimizer {ref!r}; use a registered name ({known}), "
        "package.module:attribute, or a path to a .py file"
    )


def load_optimizer(spec: str | OptimizerSpec, **hparams: Any) -> ChallengeOptimizer:
    """Build and check the optimizer a spec names."""
    parsed = parse_spec(spec, **hparams)
    obj, from_registry = _resolve(parsed.ref)
    if (
        from_registry
        or inspect.isclass(obj)
        or (callable(obj) and not hasattr(obj, "step"))
    ):
        try:
            obj = obj(**parsed.hparams)
        except ImportError as exc:
            entry = _REGISTRY.get(parsed.ref)
            hint = (
                f"; install it with pip install '{entry.requires}'"
                if (entry and entry.requires)
                else ""
            )
            raise ValueError(
                f"optimizer {parsed.ref!r} needs a package that is missing: {exc}{hint}"
            ) from exc
        except TypeError as exc:
            raise ValueError(
                f"bad hyperparameters for optimizer {parsed.ref!r} "
                f"{parsed.hparams}: {exc}"
            ) from exc
    elif parsed.hparams:
        raise ValueError(
            f"{parsed.ref!r} is an optimizer object, not a class or factory, so it "
            f"takes no hyperparameters (got {parsed.hparams})"
        )
    try:
        check_optimizer(obj, parsed.ref)
    except HookError as exc:
        raise HookError(f"optimizer {parsed.ref!r} is not usable: {exc}") from None
    return obj
