"""Methods as plugins: each module of this package registers one method by name with `@register_method`, the way
lm-eval registers models. A method declares its options, how it learns, the tensors it stores per hook, the hook
that applies them at strength lambda, and its summary and plot. Modules here are found without being listed, and
other packages can add methods through the `aura_tl.methods` entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil

from aura_tl.methods.base import CommonOptions, ConceptOptions, Method
from aura_tl.options import OptionSpec, collect_specs

REGISTRY: dict[str, Method] = {}
NO_METHOD = "none"  # the unsteered baseline, where a front end accepts a method name
DEFAULT_METHOD = "linact"  # what `aura-tl learn` and `aura-hooked` use unless told: the front's best (README, Results)
_discovered = False


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: `@register_method class LinearAcT(Method): name = "linact" ...`."""
    if not cls.name or cls.name == NO_METHOD:
        raise ValueError(f"{cls.__name__} needs a name other than '{NO_METHOD}'")
    if cls.name in REGISTRY and type(REGISTRY[cls.name]) is not cls:
        raise ValueError(f"method '{cls.name}' is registered twice ({type(REGISTRY[cls.name]).__name__}, {cls.__name__})")
    REGISTRY[cls.name] = cls()
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    for entry in importlib.metadata.entry_points(group="aura_tl.methods"):
        entry.load()


def method_names() -> list[str]:
    """Registered method names, sorted (the order does not depend on which module was imported first)."""
    _discover()
    return sorted(REGISTRY)


def get_method(name: str) -> Method:
    _discover()
    if name not in REGISTRY:
        raise ValueError(f"unknown method '{name}'; choose from {', '.join(method_names())}")
    return REGISTRY[name]


def option_specs() -> dict[str, OptionSpec]:
    """Every option of every method (what the CLI, lm-eval model_args and bench flags are made from)."""
    _discover()
    return collect_specs({name: REGISTRY[name].Options for name in method_names()})


__all__ = ["DEFAULT_METHOD", "NO_METHOD", "REGISTRY", "CommonOptions", "ConceptOptions", "Method", "get_method", "method_names",
           "option_specs", "register_method"]
