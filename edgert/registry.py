"""One name -> class registry with lazy discovery: every module of a package registers itself on import.

Used for ops (edgert/ops/), weight quantization methods and calibration observers (converters/)."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, error: Callable[[str], Exception],
                 skip: tuple[str, ...] = ("base",)):
        self.kind, self.package, self.error, self.skip = kind, package, error, skip
        self._classes: dict[str, type[T]] = {}
        self._discovered = False

    def register(self, name: str, cls: type[T]) -> type[T]:
        if not name:
            raise RuntimeError(f"{cls.__name__} has no {self.kind} name")
        if self._classes.get(name, cls) is not cls:
            raise RuntimeError(f"{self.kind} {name} registered twice")
        self._classes[name] = cls
        return cls

    def _discover(self) -> None:
        if self._discovered:
            return
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if mod.name not in self.skip and not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")
        self._discovered = True

    def known(self) -> list[str]:
        self._discover()
        return sorted(self._classes)

    def lookup(self, name: str, context: str = "") -> type[T]:
        """The class registered as `name`; an unknown name raises `error` listing the known ones."""
        self._discover()
        cls = self._classes.get(name)
        if cls is None:
            raise self.error(f"unknown {self.kind} {name!r}{context} (known: {', '.join(self.known())})")
        return cls
