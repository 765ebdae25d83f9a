"""Plugins by name, the way lm-eval registers models: a class decorator stores one instance per name, lookups find
the modules of a package and the entry points of installed packages first, and an unknown name is an error that
lists the known ones (with a "did you mean"). Methods and gate rules are each one `Registry`."""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """`kind` names what is registered in messages; `entry_points` is the group other packages add to; `package`
    (a package name) has each of its public modules imported on the first lookup."""

    def __init__(self, kind: str, entry_points: str, package: str | None = None,
                 hint: str = "", reserved: tuple[str, ...] = ()) -> None:
        self.kind, self.entry_points, self.package = kind, entry_points, package
        self.hint, self.reserved = hint, reserved
        self.entries: dict[str, T] = {}
        self._discovered = False

    def register(self, cls: type[T], check: Callable[[type[T]], str | None] = lambda cls: None) -> type[T]:
        """Store an instance of `cls` under `cls.name` (the same class again is a no-op)."""
        problem = check(cls)
        if not cls.name or cls.name in self.reserved or problem:
            raise ValueError(f"{cls.__name__}: {problem or f'a {self.kind} needs a name other than {self.reserved}'}")
        known = self.entries.get(cls.name)
        if known is not None and type(known) is not cls:
            raise ValueError(f"{self.kind} '{cls.name}' is registered twice ({type(known).__name__}, {cls.__name__})")
        self.entries[cls.name] = cls()
        return cls

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self.package:
            module = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(module.__path__):
                if not info.name.startswith("_") and info.name != "base":
                    importlib.import_module(f"{self.package}.{info.name}")
        for entry in importlib.metadata.entry_points(group=self.entry_points):
            entry.load()

    def names(self) -> list[str]:
        """Registered names, sorted (the order does not depend on which module was imported first)."""
        self.discover()
        return sorted(self.entries)

    def get(self, name: str) -> T:
        self.discover()
        if name not in self.entries:
            close = difflib.get_close_matches(name, self.entries, n=1)
            raise ValueError(f"unknown {self.kind} '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                             + f"; choose from {', '.join(self.names())}" + self.hint)
        return self.entries[name]
