"""What Linear-AcT and Mean-AcT share (Rodriguez et al. 2024, "Controlling Language and Diffusion Models by
Transporting Activations"): a per-dimension affine map a -> omega a + beta that transports the toxic (source)
activation distribution onto the non-toxic (target) one, applied at every position inside the source support
[lo, hi] = [min x, max x] and nowhere else. At strength lambda an activation a inside the support becomes
(1 - lambda) a + lambda (omega a + beta); lambda above 1 moves past the target (over-transport). With `causal`
(the paper's better variant) layer l is estimated with the maps of the layers before it already applied.
A method says how `fit` estimates omega and beta from the pooled source and target responses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from aura_tl.hooks import layer_of
from aura_tl.intervention import Intervention
from aura_tl.methods.base import ConceptOptions, Method, base_metadata, data_metadata
from aura_tl.models import ModelShape
from aura_tl.options import option, with_default
from aura_tl.responses import cached_responses, collect_responses_causal

TRANSPORT_TENSORS = ("omega", "beta", "lo", "hi")
WHOLE_LINE = torch.finfo(torch.float32).max  # a support [-WHOLE_LINE, WHOLE_LINE] applies the map everywhere


@dataclass
class TransportSiteOptions(ConceptOptions):
    """Where and on what every transport method learns; `gate` and `strength` keep the common defaults unless a
    method declares its own."""

    max_per_class: int = with_default(ConceptOptions, "max_per_class", 1000)
    hooks: str = with_default(ConceptOptions, "hooks", "blocks.*.hook_attn_out")
    pooling: str = with_default(ConceptOptions, "pooling", "mean")


@dataclass
class TransportOptions(TransportSiteOptions):
    """The options of the methods fitted layer by layer (Linear-AcT, Mean-AcT)."""

    causal: bool = option(True, "estimate each layer with the maps of earlier layers applied (AcT's causal variant)")


def transport_hook(activation: Tensor, hook, slope: Tensor, shift: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """a + lambda ((omega - 1) a + beta) inside [lo, hi], a outside; `slope`, `shift` carry lambda already.
    Per-head hooks ([batch, pos, head, d]) read the flat vectors head-major."""
    if activation.ndim == 4:
        shape = activation.shape[-2:]
        slope, shift, lo, hi = (t.view(shape) for t in (slope, shift, lo, hi))
    inside = (activation >= lo) & (activation <= hi)
    return torch.where(inside, activation + slope * activation + shift, activation)


class TransportMethod(Method):
    """Learn: pooled responses per hook (causally by default) -> `fit(source, target)`. Stored per hook: omega,
    beta, lo, hi."""

    Options = TransportOptions
    applies = TRANSPORT_TENSORS
    max_strength = 16.0  # lambda > 1 extrapolates the map (over-transport); see docs/results/defaults.md

    def fit(self, source: Tensor, target: Tensor) -> dict[str, Tensor]:
        """omega, beta, lo, hi per dimension from the pooled toxic (source) and non-toxic (target) responses."""
        raise NotImplementedError

    def learn(self, model, data, options, *, progress: bool = True):
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
        bounded = all(bool((t["hi"] < WHOLE_LINE).any()) for t in intervention.tensors.values())
        keys = ("omega", "beta", "width") if bounded else ("omega", "beta")  # lineas: applied on the whole line
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4.2))
        for ax, key in zip(axes, keys):
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
