"""Turn user hook patterns (`blocks.*.mlp.hook_post`, or a short form like `hook_post`) into TransformerLens names,
spelt one way whichever model class runs them (`aura_tl.backends`)."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence

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


def split_patterns(patterns: str | Sequence[str]) -> list[str]:
    """Accept one pattern, a comma/space-separated string (CLI, lm-eval args) or a list."""
    if isinstance(patterns, str):
        patterns = [p for p in re.split(r"[,\s|]+", patterns) if p]
    return [SHORT_FORMS.get(p, p) for p in patterns]


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
    for pattern in split_patterns(patterns):
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
