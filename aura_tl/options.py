"""Method options, declared once as dataclass fields; the CLI flags, the `aura-hooked` model_args and the bench
flags are all derived from these declarations (no default is written twice).

    @dataclass
    class DampOptions(ConceptOptions):
        num_experts: int = option(500, "k: how many of the highest-AUROC neurons to damp")

`option(default, help)` is `dataclasses.field` with the help text (and optional extra CLI spellings) in its
metadata. `coerce_options` turns strings (lm-eval `k=v`, CLI) into the declared types and refuses unknown names.
An option that only says how to learn or apply, not what is learned (`strength`, where responses are kept), is
declared `learned=False`, and the cache key (`learned_values`) leaves it out.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Learned = bool | Callable[[Any], bool]


def option(default: Any, help: str, *, aliases: tuple[str, ...] = (), choices: tuple | None = None,
           parse: Callable[[Any], Any] | None = None, learned: Learned = True) -> Any:
    """A dataclass field with its help text; `aliases` are extra CLI spellings (e.g. `--batch-size`), `parse` turns
    a given value (string or not) into the option's value where the type alone cannot, and `learned` says whether
    the value changes what is learned (False, or a function of the options object for "only when ...")."""
    return dataclasses.field(default=default, metadata={"help": help, "aliases": aliases, "choices": choices,
                                                        "parse": parse, "learned": learned})


def with_default(options_class: type, name: str, default: Any) -> Any:
    """`options_class`'s declaration of option `name` with another default: how a method's options change a
    default without repeating the option's help, parser or cache rule."""
    return dataclasses.field(default=default, metadata=options_class.__dataclass_fields__[name].metadata)


def internal(default: Any = None) -> Any:
    """A field set by the library, never by a user (no flag, no model arg): e.g. the options of the chosen gate rule."""
    return dataclasses.field(default=default, metadata={"internal": True})


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One option as every front end sees it: its name, type, help and each method's default."""

    name: str
    type: type
    help: str
    defaults: dict[str, Any]
    aliases: tuple[str, ...] = ()
    choices: tuple | None = None
    parse: Callable[[Any], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe_defaults(self) -> str:
        """`default 'max'`, or `default 'max' (linact: 'mean')` where methods differ."""
        values = [repr(v) for v in self.defaults.values()]
        common = max(set(values), key=values.count)
        others = [f"{m}: {v!r}" for m, v in self.defaults.items() if repr(v) != common]
        return f"default {common}" + (f" ({', '.join(others)})" if others else "")


def _base_type(annotation: Any) -> type:
    """`int`, `float`, `str`, `bool` from a (possibly `X | None`) annotation."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"__builtins__": __builtins__})  # noqa: S307 - our own annotations only
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def fields_of(options_class: type) -> list[tuple[dataclasses.Field, type]]:
    """The user-facing option fields (internal ones left out) with their base types."""
    hints = typing.get_type_hints(options_class)
    return [(f, _base_type(hints[f.name])) for f in dataclasses.fields(options_class) if not f.metadata.get("internal")]


def option_names(options_class: type) -> list[str]:
    return [f.name for f, _ in fields_of(options_class)]


def collect_specs(options_by_method: Mapping[str, type]) -> dict[str, OptionSpec]:
    """The union of all methods' options; one name must mean one type everywhere."""
    specs: dict[str, OptionSpec] = {}
    for method, options_class in options_by_method.items():
        for field, kind in fields_of(options_class):
            known = specs.get(field.name)
            if known is None:
                specs[field.name] = OptionSpec(field.name, kind, field.metadata.get("help", ""), {method: field.default},
                                               tuple(field.metadata.get("aliases", ())),
                                               field.metadata.get("choices"), field.metadata.get("parse"))
            elif known.type is not kind:
                raise TypeError(f"option {field.name} is {known.type.__name__} in one method, {kind.__name__} in {method}")
            else:
                known.defaults[method] = field.default
    return specs


def finite(value: float, name: str) -> float:
    """`value` when it is a finite number; NaN and infinity pass every range check silently, so they are refused."""
    if not math.isfinite(value):
        raise ValueError(f"option {name}={value!r} is not a finite number")
    return value


def parse_value(kind: type, value: Any, name: str) -> Any:
    """A declared type from a string or value: `'0.5'` -> 0.5, `'true'` -> True, `'none'` -> None; a float must be
    finite."""
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return finite(float(value), name)
    if value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    if text.lower() in ("none", "null", ""):
        return None
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(float(text)) if float(text).is_integer() else int(text)
        parsed = kind(text)
    except (ValueError, OverflowError):
        raise ValueError(f"option {name}={value!r} is not a valid {kind.__name__}") from None
    return finite(parsed, name) if kind is float else parsed


def coerce_options(options_class: type, method: str, values: Mapping[str, Any]):
    """An options dataclass from `values` (None = keep the default); unknown names are an error with a hint."""
    declared = fields_of(options_class)
    fields = {f.name: kind for f, kind in declared}
    parsers = {f.name: f.metadata.get("parse") for f, _ in declared}
    unknown = [k for k in values if k not in fields]
    if unknown:
        hints = [difflib.get_close_matches(k, fields, n=1) for k in unknown]
        said = ", ".join(f"'{k}'" + (f" (did you mean '{h[0]}'?)" if h else "") for k, h in zip(unknown, hints))
        raise ValueError(f"{said}: not an option of {method}; its options are {', '.join(sorted(fields)) or 'none'}")
    given = {k: parsers[k](v) if parsers[k] else parse_value(fields[k], v, k) for k, v in values.items()
             if v is not None}
    hints = typing.get_type_hints(options_class)
    for k, v in given.items():
        if v is None and type(None) not in typing.get_args(hints[k]):
            raise ValueError(f"option {k}={values[k]!r}: {k} needs a {fields[k].__name__} (it has no 'none')")
    options = options_class(**given)
    for field, kind in declared:  # defaults and a dataclass's own __post_init__ edits included
        value = getattr(options, field.name)
        if kind is float and isinstance(value, float):
            finite(value, field.name)
    for field, _ in fields_of(options_class):
        choices = field.metadata.get("choices")
        if choices and getattr(options, field.name) not in choices:
            raise ValueError(f"option {field.name}={getattr(options, field.name)!r} must be one of {choices}")
    return options


class _Unset:
    """A flag the command line did not give (its option keeps the method's default); `none` given is None."""

    def __repr__(self) -> str:
        return "unset"


UNSET = _Unset()


def add_option_flags(parser: argparse.ArgumentParser, specs: Iterable[OptionSpec], aliases: bool = True,
                     title: str = "method options (each method reads its own; see `aura-tl methods`)",
                     unset: str | None = None) -> None:
    """One flag per option (default `UNSET` = the method's own default, shown in the help, or what `unset` says);
    `aliases=False` leaves out the extra spellings where the parser already uses them for something else."""
    group = parser.add_argument_group(title)
    for spec in specs:
        methods = ", ".join(spec.defaults) if len(spec.defaults) < 3 else None
        text = f"{spec.help} ({spec.describe_defaults()}" + (f"; {methods} only)" if methods else ")")
        text = f"{spec.help} ({unset})" if unset else text
        kind = spec.parse or {bool: parse_bool_flag, float: parse_float_flag}.get(spec.type, spec.type)
        group.add_argument(spec.flag, *(spec.aliases if aliases else ()), dest=spec.name, type=kind, default=UNSET,
                           help=text.replace("%", "%%"),
                           choices=spec.choices, metavar=spec.type.__name__.upper() if not spec.choices else None)


def parse_bool_flag(text: str) -> bool:
    return parse_value(bool, text, "flag")


def parse_float_flag(text: str) -> float:
    """argparse `type=` for a float flag: finite numbers only."""
    try:
        return parse_value(float, text, "flag")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace("option flag=", "")) from None


def given_values(namespace: argparse.Namespace, specs: Iterable[OptionSpec]) -> dict[str, Any]:
    """The options a user actually set on the command line; one given as `none` stays the string 'none' (a bare
    None means "keep the default" to `coerce_options`), so `--max-ppl-increase none` turns calibration off."""
    given = {s.name: getattr(namespace, s.name) for s in specs if getattr(namespace, s.name, UNSET) is not UNSET}
    return {name: "none" if value is None else value for name, value in given.items()}


def as_dict(options) -> dict[str, Any]:
    return dataclasses.asdict(options)


def learned_values(options) -> dict[str, Any]:
    """The options that change what is learned (each field's `learned` declaration), internal option objects
    (a gate rule's options) included the same way: what a cache key hashes."""
    values = {}
    for field in dataclasses.fields(options):
        learned = field.metadata.get("learned", True)
        if callable(learned):
            learned = learned(options)
        if not learned:
            continue
        value = getattr(options, field.name)
        values[field.name] = learned_values(value) if dataclasses.is_dataclass(value) else value
    return values
