"""Backend registry.  One backend per module in edgert/backends/, imported only when first asked for."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from edgert.errors import BackendUnavailable
from edgert.ir import Graph

# name -> module under edgert.backends.  Order = preference for "auto".
BACKEND_MODULES: dict[str, str] = {"ort": "ort", "numpy": "numpy_ref"}


@dataclass
class BackendOptions:
    threads: int = 0              # 0 = library default
    # later: device ids, precision overrides, ...


class Executable(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend:
    name: ClassVar[str] = ""

    @classmethod
    def available(cls) -> bool:
        """True when the backend's dependencies import."""
        return True

    def prepare(self, graph: Graph, options: BackendOptions) -> Executable:
        raise NotImplementedError(f"{type(self).__name__}.prepare")


def get_backend(name: str) -> Backend:
    if name == "auto":
        for cand in BACKEND_MODULES:
            try:
                return get_backend(cand)
            except BackendUnavailable:
                continue
        raise BackendUnavailable("no backend is available")
    mod_name = BACKEND_MODULES.get(name)
    if mod_name is None:
        raise BackendUnavailable(f"unknown backend {name!r} (known: {', '.join(BACKEND_MODULES)})")
    try:
        mod = importlib.import_module(f"edgert.backends.{mod_name}")
    except ImportError as e:  # the backend's optional dependency is missing
        raise BackendUnavailable(f"backend {name!r} is not available: {e}") from e
    backend_cls = getattr(mod, "BACKEND")
    if not backend_cls.available():
        raise BackendUnavailable(f"backend {name!r} is not available on this machine")
    return backend_cls()
