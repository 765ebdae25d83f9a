"""An intervention is data (named tensors per TransformerLens hook, plus metadata) and, through its method in the
registry, one function per hook that applies them: `(name, fn)` pairs for `model.hooks(fwd_hooks=...)`. Apply it
for a block (`with iv.applied(model)`) or attach it until detached; save/load it as `.safetensors` (no pickle).

File layout: one tensor per `<tensor name>/<hook name>` key (e.g. `alpha/blocks.3.mlp.hook_post`, `omega/...`),
string metadata `format`, `method`, `strength`, `model_shape`, `metadata` (JSON). Version-1 files (aura-tl 0.1.0)
used the same keys and load unchanged. A file that leaves prompts unsteered (`steer_prompt` false) adds the key
`steer_prompt` and is written as version 3, so an aura-tl that cannot honour it refuses it instead of steering the
prompt; every other file is still written as version 2.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aura_tl.backends import backend_of, hook_point, hooks_applied, remove_hook_fn
from aura_tl.gating import GateRule, gated, rule_of
from aura_tl.hooks import last_block, layer_of
from aura_tl.io import atomic_save_safetensors, load_safetensors
# the registry lookup of a file's method: the package's one import that runs back up (methods import this module)
from aura_tl.methods import get_method, option_specs
from aura_tl.methods.base import APPLY_OPTIONS, Method
from aura_tl.models import ModelShape
from aura_tl.options import parse_value
from aura_tl.prompt_scope import leaving_prompt

FORMAT_PREFIX = "aura-tl/intervention/v"
FORMAT_VERSION = 3  # the newest this aura-tl reads; a file is written at the oldest version that holds it
PLAIN_VERSION = 2  # every file that steers prompts (version 2 readers know all it says)


@dataclass
class Intervention:
    """Named tensors per hook (`tensors[hook][name]`), the model shape they fit, how they were learned, and the
    strength lambda at which they apply, and whether they edit the positions of a prompt being continued
    (`aura_tl.prompt_scope`). The method (from the registry) says how they are hooked and summarised."""

    method: str
    tensors: dict[str, dict[str, Tensor]]
    shape: ModelShape
    metadata: dict = field(default_factory=dict)
    strength: float = 1.0
    steer_prompt: bool = True

    def __post_init__(self) -> None:
        self.spec.check_strength(self.strength)
        if not self.tensors:
            raise ValueError("an intervention needs at least one hook")
        self.spec.validate(self)
        rule = self.gate_rule
        for hook, named in self.tensors.items() if rule else ():
            missing = [t for t in rule.tensors if t not in named]
            if missing:
                raise ValueError(f"{self.method} intervention gated by '{rule.name}' lacks gate tensor(s) {missing} "
                                 f"at {hook}")

    @property
    def spec(self) -> Method:
        """The registered method that knows how to hook, summarise and plot these tensors."""
        return get_method(self.method)

    @property
    def gate_rule(self) -> GateRule | None:
        """The gate rule scaling each hook's edit (`aura_tl.gating`), or None when the edits are not gated."""
        return rule_of(self.metadata, self.tensors)

    @property
    def gated(self) -> bool:
        return self.gate_rule is not None

    @property
    def hook_names(self) -> list[str]:
        return list(self.tensors)

    def tensor(self, name: str) -> dict[str, Tensor]:
        """One named tensor across hooks: `iv.tensor("alpha")` -> {hook: alpha}."""
        return {hook: named[name] for hook, named in self.tensors.items() if name in named}

    def with_strength(self, strength: float) -> "Intervention":
        return dataclasses.replace(self, strength=float(strength))

    def with_steer_prompt(self, steer_prompt: bool) -> "Intervention":
        return dataclasses.replace(self, steer_prompt=bool(steer_prompt))

    def applied_as(self, values: Mapping[str, Any]) -> "Intervention":
        """This intervention with the apply-time options given (`APPLY_OPTIONS`: strength, steer_prompt; values or
        strings, as lm-eval model_args and flags give them) in place of the file's; None keeps the file's."""
        return dataclasses.replace(self, **apply_values(values))

    def fwd_hooks(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
                  ) -> list[tuple[str, Callable]]:
        """The `(hook name, fn)` pairs for `model.hooks(fwd_hooks=...)` or `model.run_with_hooks(..., fwd_hooks=...)`;
        hooks that would change nothing are left out."""
        spec, rule, pairs = self.spec, self.gate_rule, []
        for name, named in self.tensors.items():
            fn = hook_function(spec, rule, named, float(self.strength), self.metadata, device, dtype)
            if fn is not None:
                pairs.append((name, fn if self.steer_prompt else leaving_prompt(fn)))
        return pairs

    def check_compatible(self, model) -> None:
        """Fail clearly when the file was learned on a model of another shape or names hooks the model lacks."""
        actual = ModelShape.of(model)
        if not self.shape.same_shape(actual):
            raise ValueError(
                f"this intervention was learned on {self.shape.name} ({self.shape.n_layers} layers, d_model "
                f"{self.shape.d_model}, d_mlp {self.shape.d_mlp}) but the model is {actual.name} ({actual.n_layers} "
                f"layers, d_model {actual.d_model}, d_mlp {actual.d_mlp}): learn one for this model"
            )
        points = model.hook_dict  # read once: a bridge builds this mapping on every read
        unknown = [n for n in self.tensors if n not in points]
        if unknown:
            raise ValueError(f"hooks {unknown[:3]} of this intervention do not exist in {actual.name}")
        self._check_widths(model)
        if self.shape.name != actual.name:
            warnings.warn(f"intervention learned on {self.shape.name}, applied to {actual.name} (same shape)",
                          stacklevel=2)

    def _check_widths(self, model) -> None:
        """Every per-unit tensor (the method's, and its gate rule's `unit_tensors`) has as many values as its hook
        has units (`hook_widths`)."""
        widths = hook_widths(model, list(self.tensors))
        rule = self.gate_rule
        per_unit = (*self.spec.applies, *(rule.unit_tensors if rule else ()))
        scalars = [k for k in (rule.tensors if rule else ()) if k not in per_unit]
        for hook, named in self.tensors.items():
            odd = {k: tuple(named[k].shape) for k in scalars if named[k].numel() != 1}
            if odd:
                raise ValueError(f"gate tensors {odd} (shapes) at {hook} should hold one value each")
            wrong = {k: tuple(t.shape) for k, t in named.items()
                     if k in per_unit and (t.ndim != 1 or t.numel() != widths.get(hook))}
            if wrong:
                raise ValueError(f"tensors {wrong} (shapes) at {hook} do not fit the model, whose activation there has "
                                 f"{widths.get(hook)} values (one flat vector each): the file does not match its "
                                 "stated model shape")

    def _pairs_for(self, model) -> list[tuple[str, Callable]]:
        self.check_compatible(model)
        return self.fwd_hooks(device=model.cfg.device, dtype=model.cfg.dtype)

    @contextmanager
    def applied(self, model) -> Iterator:
        """`with iv.applied(model): ...` runs the model steered and removes the hooks afterwards, even on error."""
        with hooks_applied(model, self._pairs_for(model)):
            yield model

    def attach(self, model) -> list[Callable]:
        """Add the hooks permanently (they survive `reset_hooks()`); `detach` removes exactly these."""
        pairs = self._pairs_for(model)
        for name, fn in pairs:
            hook_point(model, name).add_hook(fn, is_permanent=True)
        attached = getattr(model, "_aura_tl_attached", [])
        model._aura_tl_attached = attached + pairs
        return [fn for _, fn in pairs]

    @staticmethod
    def detach(model) -> None:
        """Remove every hook that `attach` added, leaving the user's own hooks in place."""
        for name, fn in getattr(model, "_aura_tl_attached", []):
            remove_hook_fn(hook_point(model, name), fn)
        model._aura_tl_attached = []

    # --- files -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        flat = {f"{name}/{hook}": tensor for hook, named in self.tensors.items() for name, tensor in named.items()}
        meta = {
            "format": f"{FORMAT_PREFIX}{PLAIN_VERSION if self.steer_prompt else FORMAT_VERSION}",
            "method": self.method,
            "strength": repr(float(self.strength)),
            "model_shape": self.shape.to_json(),
            "metadata": json.dumps(self.metadata, sort_keys=True, default=str),
        }
        if not self.steer_prompt:
            meta["steer_prompt"] = "false"
        return atomic_save_safetensors(flat, path, meta)

    @classmethod
    def load(cls, path: str | Path) -> "Intervention":
        flat, meta = load_safetensors(path)
        version = _format_version(meta.get("format"), path)
        try:
            method = meta["method"]
            shape = ModelShape.from_json(meta["model_shape"])
            metadata = json.loads(meta["metadata"])
            strength = float(meta.get("strength", "1.0"))
            steer_prompt = {"true": True, "false": False}[meta.get("steer_prompt", "true")]
            if not isinstance(metadata, dict):
                raise ValueError(f"metadata is a JSON {type(metadata).__name__}, not an object")
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"{path} has corrupt metadata ({error})") from error
        tensors: dict[str, dict[str, Tensor]] = {}
        for key in sorted(flat, key=lambda k: (layer_of(k.split("/", 1)[-1]), k)):  # files sort keys by name
            if "/" not in key:
                raise ValueError(f"{path}: tensor key {key!r} is not '<name>/<hook>' (format v{version})")
            if not flat[key].is_floating_point():
                raise ValueError(f"{path}: tensor {key} is {flat[key].dtype}, not floating point: the file is damaged "
                                 "or was not written by aura-tl; learn it again")
            if not bool(torch.isfinite(flat[key]).all()):
                raise ValueError(f"{path}: tensor {key} holds NaN or infinite values: the file is damaged; learn it "
                                 "again")
            name, hook = key.split("/", 1)
            tensors.setdefault(hook, {})[name] = flat[key]
        return cls(method, tensors, shape, metadata, strength, steer_prompt)

    def summary_rows(self) -> list[dict]:
        """One row per hook, as the method summarises it (what `aura-tl inspect` prints)."""
        spec, accuracy = self.spec, self.metadata.get("gate", {}).get("accuracy", {})
        rows = [spec.summary_row(hook, named, float(self.strength), self.metadata) for hook, named in self.tensors.items()]
        if self.gated:
            for row, hook in zip(rows, self.tensors):
                row["gate_acc"] = float(accuracy.get(hook, float("nan")))
        return rows


def hook_function(spec: Method, rule: GateRule | None, tensors: dict[str, Tensor], strength: float, metadata: dict,
                  device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Callable | None:
    """One hook's function: the method's edit at `strength` from the tensors it reads, scaled per position by the
    gate rule's value when gated, every tensor on `device` / `dtype`; None when the edit changes nothing."""
    used = {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()
            if k in spec.applies or (rule is not None and k in rule.tensors)}
    fn = spec.hook_fn({k: used[k] for k in spec.applies}, float(strength), metadata)
    return gated(fn, rule, used) if fn is not None and rule is not None else fn


def apply_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The apply-time options among `values`, parsed to their declared types (None dropped); any other name is an
    error naming what a saved intervention accepts."""
    extra = sorted(set(values) - set(APPLY_OPTIONS))
    if extra:
        raise ValueError(f"{extra} cannot change a saved intervention (only {', '.join(APPLY_OPTIONS)} can)")
    specs = option_specs()  # the declared option's type: one declaration for flags, model args and this
    parsed = {k: parse_value(specs[k].type, v, k) for k, v in values.items()}
    return {k: v for k, v in parsed.items() if v is not None}


def hook_widths(model, names: list[str]) -> dict[str, int]:
    """Units per position at each hook (heads flattened): one token through the model, once per model and hook;
    later calls (every `applied` / `attach`) read the memo on the model."""
    memo: dict[str, int] = model.__dict__.setdefault("_aura_tl_hook_widths", {})
    missing = [n for n in names if n not in memo]
    if missing:
        def record(name: str):  # keyed by the name asked for: a bridge's hook sees its canonical name
            def hook(activation, hook):
                memo[name] = int(activation[0, 0].numel())
            return hook

        token = torch.zeros((1, 1), dtype=torch.long, device=model.cfg.device)
        with torch.inference_mode(), hooks_applied(model, [(n, record(n)) for n in missing]):
            backend_of(model).run_through(model, token, None, last_block(missing))
    return {n: memo.get(n) for n in names}


def _format_version(value: str | None, path) -> int:
    """The file's format version; an error for files that are not interventions or come from a newer aura-tl."""
    if not value or not value.startswith(FORMAT_PREFIX) or not value[len(FORMAT_PREFIX):].isdigit():
        raise ValueError(f"{path} is not an aura-tl intervention file (format {value!r})")
    version = int(value[len(FORMAT_PREFIX):])
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written in intervention format v{version} by a newer aura-tl; this one reads "
                         f"up to v{FORMAT_VERSION}: upgrade aura-tl (pip install -U aura-tl)")
    return version


@dataclass(frozen=True)
class InterventionStack:
    """Several interventions applied together (a combination such as Linear-AcT + DeStein), each at its own strength;
    where two hook the same activation, the first listed runs first. Applied and attached like one `Intervention`."""

    parts: tuple[Intervention, ...]

    def __post_init__(self) -> None:
        if len(self.parts) < 2:
            raise ValueError("a stack needs at least two interventions")

    @classmethod
    def load(cls, paths: list[str | Path]) -> "InterventionStack":
        return cls(tuple(Intervention.load(p) for p in paths))

    @property
    def method(self) -> str:
        return "+".join(part.method for part in self.parts)

    @property
    def gated(self) -> bool:
        """Whether any part's edits are gated (`aura_tl.gating`)."""
        return any(part.gated for part in self.parts)

    @property
    def strengths(self) -> list[float]:
        return [float(part.strength) for part in self.parts]

    def with_steer_prompt(self, steer_prompt: bool) -> "InterventionStack":
        return InterventionStack(tuple(part.with_steer_prompt(steer_prompt) for part in self.parts))

    def check_compatible(self, model) -> None:
        for part in self.parts:
            part.check_compatible(model)

    @contextmanager
    def applied(self, model) -> Iterator:
        with hooks_applied(model, [pair for part in self.parts for pair in part._pairs_for(model)]):
            yield model

    def attach(self, model) -> list[Callable]:
        return [fn for part in self.parts for fn in part.attach(model)]
