"""An intervention is data (tensors keyed by TransformerLens hook name, plus metadata) and one function that turns
it into `(name, fn)` hook pairs. Apply it for a block (`with iv.applied(model)`) or attach it until detached, and
save/load it as `.safetensors` (no pickle).

Two kinds share the format:
- scaling (AurA, Det0, Damp): `alpha/<hook>` holds one factor per neuron; the hook multiplies every position by
  alpha' = 1 - strength * (1 - alpha).
- fusion (DeStein): `direction/<hook>` holds one d_model vector per layer's attention output; the hook replaces x by
  |x| * normalize(x/|x| - strength * alpha * v/|v|).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from aura_tl.hooks import layer_of
from aura_tl.io import atomic_save_safetensors, load_safetensors
from aura_tl.models import ModelShape

SCALING_METHODS = ("aura", "det0", "damp")
FUSION_METHODS = ("destein",)
FORMAT = "aura-tl/intervention/v1"


def scale_hook(activation: Tensor, hook, alpha: Tensor) -> Tensor:
    """Multiply every position's neurons by alpha (reshaped to per-head when the hook is [batch, pos, head, d])."""
    if activation.ndim == 4:
        alpha = alpha.view(activation.shape[-2], activation.shape[-1])
    return activation * alpha


def fuse_hook(activation: Float[Tensor, "batch pos d"], hook, unit: Tensor, alpha: float) -> Tensor:
    """DeStein's norm-preserving subtraction of a unit direction: |x| * normalize(x/|x| - alpha * v)."""
    norm = activation.norm(dim=-1, keepdim=True)
    steered = activation / norm.clamp(min=1e-12) - alpha * unit
    return norm * steered / steered.norm(dim=-1, keepdim=True).clamp(min=1e-12)


@dataclass
class Intervention:
    """Tensors per hook name, the model shape they fit, and how they were learned."""

    method: str
    tensors: dict[str, Tensor]
    shape: ModelShape
    metadata: dict = field(default_factory=dict)
    strength: float = 1.0
    auroc: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in SCALING_METHODS + FUSION_METHODS:
            raise ValueError(f"unknown method '{self.method}'")
        if not 0.0 <= float(self.strength) <= 1.0:
            raise ValueError(f"strength (lambda) must be in [0, 1], got {self.strength}")
        if not self.tensors:
            raise ValueError("an intervention needs at least one hook")

    @property
    def hook_names(self) -> list[str]:
        return list(self.tensors)

    def with_strength(self, strength: float) -> "Intervention":
        return Intervention(self.method, self.tensors, self.shape, self.metadata, float(strength), self.auroc)

    def effective_alphas(self) -> dict[str, Tensor]:
        """alpha' = 1 - strength * (1 - alpha) per neuron (scaling methods)."""
        if self.method not in SCALING_METHODS:
            raise ValueError(f"{self.method} has directions, not alphas")
        return {k: 1 - self.strength * (1 - v) for k, v in self.tensors.items()}

    def fwd_hooks(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
                  ) -> list[tuple[str, Callable]]:
        """The `(hook name, fn)` pairs for `model.hooks(fwd_hooks=...)`; hooks that would change nothing are left out."""
        pairs: list[tuple[str, Callable]] = []
        if self.method in SCALING_METHODS:
            for name, alpha in self.effective_alphas().items():
                if torch.all(alpha == 1):
                    continue
                pairs.append((name, partial(scale_hook, alpha=alpha.to(device=device, dtype=dtype))))
        else:
            alpha = float(self.metadata.get("alpha", 0.3)) * self.strength
            for name, direction in self.tensors.items():
                unit = (direction / direction.norm().clamp(min=1e-12)).to(device=device, dtype=dtype)
                pairs.append((name, partial(fuse_hook, unit=unit, alpha=alpha)))
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
        unknown = [n for n in self.tensors if n not in model.hook_dict]
        if unknown:
            raise ValueError(f"hooks {unknown[:3]} of this intervention do not exist in {actual.name}")
        if self.shape.name != actual.name:
            warnings.warn(f"intervention learned on {self.shape.name}, applied to {actual.name} (same shape)",
                          stacklevel=2)

    def _pairs_for(self, model) -> list[tuple[str, Callable]]:
        self.check_compatible(model)
        return self.fwd_hooks(device=model.cfg.device, dtype=model.cfg.dtype)

    @contextmanager
    def applied(self, model) -> Iterator:
        """`with iv.applied(model): ...` runs the model steered and removes the hooks afterwards, even on error."""
        with model.hooks(fwd_hooks=self._pairs_for(model)):
            yield model

    def attach(self, model) -> list[Callable]:
        """Add the hooks permanently (they survive `reset_hooks()`); `detach` removes exactly these."""
        pairs = self._pairs_for(model)
        for name, fn in pairs:
            model.hook_dict[name].add_hook(fn, is_permanent=True)
        attached = getattr(model, "_aura_tl_attached", [])
        model._aura_tl_attached = attached + pairs
        return [fn for _, fn in pairs]

    @staticmethod
    def detach(model) -> None:
        """Remove every hook that `attach` added, leaving the user's own hooks in place."""
        for name, fn in getattr(model, "_aura_tl_attached", []):
            point = model.hook_dict[name]
            keep = []
            for handle in point.fwd_hooks:
                if handle.user_hook is fn:
                    handle.hook.remove()
                else:
                    keep.append(handle)
            point.fwd_hooks = keep
        model._aura_tl_attached = []

    # --- files -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        key = "alpha" if self.method in SCALING_METHODS else "direction"
        tensors = {f"{key}/{k}": v.float() for k, v in self.tensors.items()}
        tensors.update({f"auroc/{k}": v.double() for k, v in self.auroc.items()})
        meta = {
            "format": FORMAT,
            "method": self.method,
            "strength": repr(float(self.strength)),
            "model_shape": self.shape.to_json(),
            "metadata": json.dumps(self.metadata, sort_keys=True, default=str),
        }
        return atomic_save_safetensors(tensors, path, meta)

    @classmethod
    def load(cls, path: str | Path) -> "Intervention":
        tensors, meta = load_safetensors(path)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not an aura-tl intervention file (format {meta.get('format')!r})")
        try:
            method = meta["method"]
            shape = ModelShape.from_json(meta["model_shape"])
            metadata = json.loads(meta["metadata"])
            strength = float(meta.get("strength", "1.0"))
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"{path} has corrupt metadata ({error})") from error
        key = "alpha/" if method in SCALING_METHODS else "direction/"
        in_layer_order = sorted(tensors, key=lambda k: (layer_of(k.split("/", 1)[-1]), k))  # files sort keys by name
        main = {k.removeprefix(key): tensors[k] for k in in_layer_order if k.startswith(key)}
        auroc = {k.removeprefix("auroc/"): tensors[k] for k in in_layer_order if k.startswith("auroc/")}
        return cls(method, main, shape, metadata, strength, auroc)

    def summary_rows(self) -> list[dict]:
        """One row per hook: neurons, experts (alpha < 1), min alpha, max AUROC (what `aura-tl inspect` prints)."""
        rows = []
        for name, tensor in self.tensors.items():
            row = {"hook": name, "size": int(tensor.numel())}
            if self.method in SCALING_METHODS:
                alpha = self.effective_alphas()[name]
                row.update(experts=int((alpha < 1).sum()), min_alpha=float(alpha.min()), mean_alpha=float(alpha.mean()))
            else:
                row.update(norm=float(tensor.norm()))
            if name in self.auroc:
                row["max_auroc"] = float(self.auroc[name].max())
            rows.append(row)
        return rows
