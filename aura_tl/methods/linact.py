"""Linear-AcT (Rodriguez et al. 2024, "Controlling Language and Diffusion Models by Transporting Activations"):
per dimension, an affine map that transports the toxic (source) activation distribution onto the non-toxic
(target) one, applied at every position.

Estimation, per dimension: sort the pooled source values and the pooled target values separately and fit least
squares on the sorted pairs (the 1-D optimal-transport map, restricted to affine):
    omega = sum (x - mean x)(y - mean y) / sum (x - mean x)^2,   beta = mean y - omega mean x,
and keep the source support [lo, hi] = [min x, max x]. At strength lambda, every activation a inside the support
becomes (1 - lambda) a + lambda (omega a + beta); outside it a is left unchanged. With `causal` (the paper's
better variant) layer l is estimated with the maps of the layers before it already applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from aura_tl.hooks import layer_of
from aura_tl.learn import base_metadata, data_metadata
from aura_tl.methods import register_method
from aura_tl.methods.base import (GATE_HELP, HOOKS_HELP, MAX_PER_CLASS_HELP, POOLING_CHOICES, POOLING_HELP,
                                  STRENGTH_HELP, ConceptOptions, Method)
from aura_tl.models import ModelShape
from aura_tl.options import option
from aura_tl.responses import cached_responses, collect_responses_causal


@dataclass
class ActOptions(ConceptOptions):
    max_per_class: int = option(1000, MAX_PER_CLASS_HELP)
    hooks: str = option("blocks.*.hook_attn_out", HOOKS_HELP)
    pooling: str = option("mean", POOLING_HELP, choices=POOLING_CHOICES)
    causal: bool = option(True, "estimate each layer with the maps of earlier layers applied (AcT's causal variant)")
    # gated, lambda 2: the best point of the eval-split front inside +5 % perplexity (2.86x toxicity, 5.69x toxic
    # rate at +3.2 %; ungated lambda 1 gave 1.99x / 2.91x at +3.9 %): docs/results/front-eval.md
    gate: bool = option(True, GATE_HELP)
    strength: float = option(2.0, STRENGTH_HELP)


def sorted_pairs(source: Float[Tensor, "n d"], target: Float[Tensor, "m d"]
                 ) -> tuple[Float[Tensor, "k d"], Float[Tensor, "k d"]]:
    """Each column sorted; with unequal counts the longer side is read at the shorter side's quantiles."""
    xs, ys = source.sort(dim=0).values, target.sort(dim=0).values
    if len(xs) != len(ys):
        short, long_ = (xs, ys) if len(xs) < len(ys) else (ys, xs)
        grid = torch.linspace(0, len(long_) - 1, len(short), dtype=long_.dtype)
        below = grid.floor().long()
        above = (below + 1).clamp(max=len(long_) - 1)
        weight = (grid - below)[:, None]
        resampled = long_[below] * (1 - weight) + long_[above] * weight
        xs, ys = (short, resampled) if short is xs else (resampled, short)
    return xs, ys


def fit_linear_transport(source: Float[Tensor, "n d"], target: Float[Tensor, "m d"]) -> dict[str, Tensor]:
    """omega, beta (least squares on sorted pairs) and the source support lo, hi, per dimension (float64 fit).
    A dimension whose source is constant gets omega = 1 (a shift of the means)."""
    xs, ys = sorted_pairs(source.double(), target.double())
    x_mean, y_mean = xs.mean(0), ys.mean(0)
    spread = ((xs - x_mean) ** 2).sum(0)
    omega = torch.where(spread > 0, ((xs - x_mean) * (ys - y_mean)).sum(0) / spread.clamp(min=1e-300),
                        torch.ones_like(spread))
    beta = y_mean - omega * x_mean
    return {"omega": omega.float(), "beta": beta.float(), "lo": source.min(0).values.float(),
            "hi": source.max(0).values.float()}


def transport_hook(activation: Tensor, hook, slope: Tensor, shift: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """a + lambda ((omega - 1) a + beta) inside [lo, hi], a outside; `slope`, `shift` carry lambda already.
    Per-head hooks ([batch, pos, head, d]) read the flat vectors head-major."""
    if activation.ndim == 4:
        shape = activation.shape[-2:]
        slope, shift, lo, hi = (t.view(shape) for t in (slope, shift, lo, hi))
    inside = (activation >= lo) & (activation <= hi)
    return torch.where(inside, activation + slope * activation + shift, activation)


@register_method
class LinearAcT(Method):
    name = "linact"
    summary = "Linear-AcT: per-dimension affine transport of toxic onto non-toxic activations (causal estimation)"
    Options = ActOptions
    applies = ("omega", "beta", "lo", "hi")
    # lambda > 1 moves past the target mean (over-transport); with gate=true, where neutral text is edited little,
    # lambda 2 screened at 2.75x toxicity for +3.2 % perplexity (docs/results/front-screen-gate-x.md)
    max_strength = 4.0

    def fit(self, source: Tensor, target: Tensor) -> dict[str, Tensor]:
        return fit_linear_transport(source, target)

    def learn(self, model, data, options, *, progress: bool = True):
        from aura_tl.intervention import Intervention

        started = time.perf_counter()
        labels = torch.tensor(data.labels)
        maps: dict[str, dict[str, Tensor]] = {}

        def estimate(name: str, pooled: Tensor) -> Callable | None:
            maps[name] = self.fit(pooled[labels == 1], pooled[labels == 0])
            return self.hook_fn({k: v.to(model.cfg.device, model.cfg.dtype) for k, v in maps[name].items()}, 1.0, {})

        if not options.causal:
            responses = cached_responses(model, data, options.hooks, pooling=options.pooling,
                                         batch_size=options.learn_batch_size, path=options.responses, progress=progress)
            return self.from_responses(model, responses, options, data=data_metadata(data),
                                       seconds={"total": round(time.perf_counter() - started, 3)})
        collect_responses_causal(model, data.texts, data.labels, options.hooks, estimate,
                                 pooling=options.pooling, batch_size=options.learn_batch_size, progress=progress)
        metadata = base_metadata(options, hooks=list(maps), pooling=options.pooling, data=data_metadata(data),
                                 causal=True, seconds={"total": round(time.perf_counter() - started, 3)})
        return Intervention(self.name, maps, ModelShape.of(model), metadata, options.strength)

    def from_responses(self, model, responses, options, **metadata):
        """Each hook fitted on the responses as given (non-causal: they were recorded without earlier maps)."""
        from aura_tl.intervention import Intervention

        labels = responses.labels
        maps = {name: self.fit(pooled[labels == 1], pooled[labels == 0]) for name, pooled in responses.pooled.items()}
        metadata.setdefault("data", {"source": "responses", "n": len(labels)})
        metadata = base_metadata(options, hooks=list(maps), pooling=responses.metadata.get("pooling", options.pooling),
                                 causal=False, **metadata)
        return Intervention(self.name, maps, ModelShape.of(model), metadata, options.strength)

    def hook_fn(self, tensors, strength: float, metadata: dict) -> Callable | None:
        if strength == 0:
            return None
        return partial(transport_hook, slope=strength * (tensors["omega"] - 1), shift=strength * tensors["beta"],
                       lo=tensors["lo"], hi=tensors["hi"])

    def summary_row(self, hook, tensors, strength, metadata) -> dict:
        omega, beta, width = tensors["omega"], tensors["beta"], tensors["hi"] - tensors["lo"]
        return {"hook": hook, "dims": int(omega.numel()), "omega_median": float(omega.median()),
                "omega_min": float(omega.min()), "omega_max": float(omega.max()),
                "beta_mean_abs": float(beta.abs().mean()), "support_median": float(width.median())}

    def plot(self, intervention, plt):
        """Per layer: the distributions of omega and beta (5/25/50/75/95th percentiles) and the support width."""
        names = sorted(intervention.tensors, key=layer_of)
        layers = [layer_of(n) for n in names]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for ax, key in zip(axes, ("omega", "beta", "width")):
            values = [(intervention.tensors[n]["hi"] - intervention.tensors[n]["lo"]) if key == "width"
                      else intervention.tensors[n][key] for n in names]
            q = np.array([np.percentile(v.double().numpy(), [5, 25, 50, 75, 95]) for v in values])
            ax.fill_between(layers, q[:, 0], q[:, 4], alpha=0.2, color="tab:blue", label="5-95 %")
            ax.fill_between(layers, q[:, 1], q[:, 3], alpha=0.4, color="tab:blue", label="25-75 %")
            ax.plot(layers, q[:, 2], color="tab:blue", label="median")
            ax.set_xlabel("layer")
            ax.set_title({"omega": "omega (slope) per layer", "beta": "beta (shift) per layer",
                          "width": "source support width (hi - lo)"}[key])
            if key == "omega":
                ax.axhline(1, color="gray", lw=0.8, ls="--")
            if key == "beta":
                ax.axhline(0, color="gray", lw=0.8, ls="--")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{intervention.method}: {len(names)} hooks ({names[0].split('.', 2)[-1]})")
        return fig
