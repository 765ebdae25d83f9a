"""Methods as plugins: each module of this package registers one method by name with `@register_method`, the way
lm-eval registers models. A method declares its options, how it learns, the tensors it stores per hook, the hook
that applies them at strength lambda, and its summary and plot. Modules here are found without being listed, and
other packages can add methods through the `aura_tl.methods` entry-point group.
"""

from __future__ import annotations

from aura_tl.gating import gate_names, get_gate
from aura_tl.methods.base import CommonOptions, ConceptOptions, Method
from aura_tl.options import OptionSpec, collect_specs
from aura_tl.registry import Registry

NO_METHOD = "none"  # the unsteered baseline, where a front end accepts a method name
DEFAULT_METHOD = "linact"  # what `aura-tl learn` and `aura-hooked` use unless told: the front's best (README, Results)
METHODS: Registry[Method] = Registry("method", "aura_tl.methods", package=__name__, reserved=(NO_METHOD,))
REGISTRY = METHODS.entries


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: `@register_method class LinearAcT(Method): name = "linact" ...`."""
    return METHODS.register(cls)


def method_names() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> Method:
    return METHODS.get(name)


def option_specs() -> dict[str, OptionSpec]:
    """Every option of every method and gate rule (what the CLI, lm-eval model_args and bench flags are made from);
    a gate rule's options are listed under `gate=<rule>`."""
    return collect_specs({**{name: get_method(name).Options for name in method_names()},
                          **{f"gate={name}": get_gate(name).Options for name in gate_names()}})


__all__ = ["DEFAULT_METHOD", "METHODS", "NO_METHOD", "REGISTRY", "CommonOptions", "ConceptOptions", "Method", "get_method", "method_names",
           "option_specs", "register_method"]
