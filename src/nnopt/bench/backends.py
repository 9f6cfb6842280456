"""Choosing a backend by name: the switch behind ``nnopt bench --backend``.

Each entry maps a name to ``"module:factory"``, imported only when chosen, so
a backend's dependencies (Ray, say) are needed only by those who use it. A
factory takes the keyword options below and returns a
:class:`nnopt.bench.jobs.Backend`; options it has no use for it may ignore.
To add a backend, add one line to ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from typing import Any

from nnopt.bench.jobs import Backend

__all__ = ["BACKENDS", "make_backend"]

BACKENDS: dict[str, str] = {
    "local": "nnopt.bench.local:LocalBackend",  # worker processes on this machine
    "ray": "nnopt.bench.ray_backend:RayBackend",  # Ray tasks, here or on a cluster
    "batched": "nnopt.bench.batched_backend:BatchedBackend",  # many seeds at once
}


def make_backend(name: str, *, workers: int | None = None, **options: Any) -> Backend:
    """Build the backend ``name``; ``workers`` caps jobs run at once; ``options``
    go to its factory (the Ray backend's address and resources per job)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}"
        ) from None
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"backend {name!r} cannot be loaded ({exc}); is its extra installed?"
        ) from exc
    factory = getattr(module, attribute)
    return factory(workers=workers, **options)
