"""Turn user hook patterns (`blocks.*.mlp.hook_post`, or a short form like `hook_post`) into TransformerLens names,
spelt one way whichever model class runs them (`aura_tl.backends`).

A pattern may name its layers as a range of the model's depth, `blocks.{1/2:}.hook_attn_out` (the later half), so one
recipe means the same part of any model: `{START:END}` is a Python slice over the blocks whose ends are block indices
(`{15:}`) or fractions of the depth (`1/2`, `0.5`; floor(fraction x n_layers)).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence
from fractions import Fraction

from aura_tl.backends import backend_of

DEFAULT_HOOKS = "blocks.*.mlp.hook_post"

# short forms a user may type -> full pattern; any full TransformerLens pattern works as well
SHORT_FORMS = {
    "hook_post": "blocks.*.mlp.hook_post",
    "hook_pre": "blocks.*.mlp.hook_pre",
    "hook_pre_linear": "blocks.*.mlp.hook_pre_linear",
    "hook_mlp_out": "blocks.*.hook_mlp_out",
    "hook_attn_out": "blocks.*.hook_attn_out",
    "hook_z": "blocks.*.attn.hook_z",
    "hook_result": "blocks.*.attn.hook_result",
}


LAYER_RANGE = re.compile(r"\{([^{}:]*):([^{}:]*)\}")


def _range_end(text: str, n_layers: int, pattern: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"layer range in '{pattern}': '{text}' is neither a block index nor a fraction of the depth "
                         f"(write e.g. {{1/2:}} or {{15:}})") from None
    if value.denominator == 1 and "/" not in text and "." not in text:
        return int(value)  # a block index (negative counts from the end, as in a slice)
    if not 0 <= value <= 1:
        raise ValueError(f"layer range in '{pattern}': the fraction {text} lies outside [0, 1]")
    return int(value * n_layers)  # floor: {1/2:} of 30 blocks starts at 15, of 18 at 9


def expand_layer_ranges(pattern: str, n_layers: int) -> list[str]:
    """`pattern` with a `{START:END}` layer range written out as one pattern per block (`blocks.{1/2:}.x` on 4
    blocks -> `blocks.2.x`, `blocks.3.x`); a pattern without one is returned alone."""
    match = LAYER_RANGE.search(pattern)
    if match is None:
        if "{" in pattern or "}" in pattern:
            raise ValueError(f"hook pattern '{pattern}': a layer range is written {{START:END}}, e.g. blocks.{{1/2:}}.hook_attn_out")
        return [pattern]
    start, end = (_range_end(part, n_layers, pattern) for part in match.groups())
    layers = range(n_layers)[slice(start, end)]
    if not layers:
        raise ValueError(f"hook pattern '{pattern}' names no block of a {n_layers}-block model")
    return [out for layer in layers
            for out in expand_layer_ranges(pattern[:match.start()] + str(layer) + pattern[match.end():], n_layers)]


def split_patterns(patterns: str | Sequence[str]) -> list[str]:
    """Accept one pattern, a comma/space-separated string (CLI, lm-eval args) or a list."""
    if isinstance(patterns, str):
        patterns = [p for p in re.split(r"[,\s|]+", patterns) if p]
    return [SHORT_FORMS.get(p, p) for p in patterns]


def concrete_patterns(patterns: str | Sequence[str], n_layers: int) -> list[str]:
    """`split_patterns` with every layer range written out for a model of `n_layers` blocks."""
    return [one for pattern in split_patterns(patterns) for one in expand_layer_ranges(pattern, n_layers)]


def layer_of(hook_name: str) -> int:
    """The block index in a `blocks.{L}....` hook name (-1 for hooks outside blocks)."""
    match = re.match(r"blocks\.(\d+)\.", hook_name)
    return int(match.group(1)) if match else -1


def last_block(hook_names: Sequence[str]) -> int | None:
    """The last block a forward must run for every hook to fire; None when a hook lies outside the blocks (the
    embedding or the final norm), where the whole model runs."""
    layers = [layer_of(name) for name in hook_names]
    return None if min(layers) < 0 else max(layers)


def resolve_hook_names(model, patterns: str | Sequence[str] = DEFAULT_HOOKS) -> list[str]:
    """All hook names of `model` matched by the patterns, in layer order, each spelt once the way TransformerLens 3
    spells it (a TransformerLens 4 canonical name such as `blocks.3.mlp.out.hook_in` is accepted and becomes
    `blocks.3.mlp.hook_post`); a pattern that matches none is an error."""
    backend = backend_of(model)
    available = backend.hook_names(model)
    other_spellings = backend.spellings(model)
    position = {name: i for i, name in enumerate(available)}
    chosen: list[str] = []
    for pattern in concrete_patterns(patterns, model.cfg.n_layers):
        matched = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
        matched += [user for other, user in other_spellings.items() if fnmatch.fnmatchcase(other, pattern)]
        if not matched:
            generic = sorted({re.sub(r"^blocks\.\d+\.", "blocks.*.", n) for n in available})
            hint = difflib.get_close_matches(pattern, generic, n=1, cutoff=0.6)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else f"; hook names look like '{DEFAULT_HOOKS}'"
            raise ValueError(f"hook pattern '{pattern}' matches no hook of {model.cfg.model_name}{suggestion}")
        chosen += [m for m in matched if m not in chosen]
    if not chosen:
        raise ValueError("no hook pattern given")
    return sorted(chosen, key=lambda n: (layer_of(n), position.get(n, len(position))))


def user_hook_name(model, name: str) -> str:
    """The one spelling of hook `name` that files and results use (see `resolve_hook_names`)."""
    return backend_of(model).user_name(model, name)
