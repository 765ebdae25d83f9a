"""LinEAS-style end-to-end transport (after Rodriguez et al. 2025, "End-to-end Learning of Activation Steering with
a Distributional Loss"): one per-dimension affine map a -> omega a + beta at every hooked layer, all optimised
together by backpropagation through the frozen model. The loss, at every hooked layer, is the 1-D Wasserstein-2
distance per dimension between the pooled toxic activations as the maps before and at that layer leave them and the
unsteered non-toxic ones, in units of the non-toxic spread; an L1 term on (omega - 1, beta / spread) keeps most
units still. Linear-AcT fits each layer alone on sorted pairs; here a map also answers for what it does downstream.

Stored as every transport method (`omega`, `beta`, and a support [lo, hi] that is the whole line: the maps apply at
every position), so strength, gates, calibration and files work unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import trange

from aura_tl.backends import backend_of, hooks_applied
from aura_tl.hooks import last_block, resolve_hook_names
from aura_tl.intervention import Intervention
from aura_tl.methods import register_method
from aura_tl.methods._transport import WHOLE_LINE, TransportMethod, TransportSiteOptions
from aura_tl.methods.base import base_metadata, data_metadata
from aura_tl.methods.linact import read_sorted
from aura_tl.models import ModelShape, hf_tokenizer, pad_token_id
from aura_tl.options import option
from aura_tl.responses import (
    collect_responses,
    flatten_heads,
    make_batch,
    pool,
    tokenize,
)

log = logging.getLogger(__name__)
MOVED_TOLERANCE = 1e-3  # |omega - 1| and |beta| / spread below this after training count as still, and are set so


@dataclass
class LineasOptions(TransportSiteOptions):
    steps: int = option(200, "optimisation steps (Adam, cosine-decayed learning rate)")
    lr: float = option(0.01, "Adam's learning rate at the first step")
    step_batch: int = option(8, "toxic sentences per step (every non-toxic one is the target at every step)")
    sparsity: float = option(0.0, "L1 weight on (omega - 1, beta / spread), mean over units per layer: more leaves "
                             "more units untouched")
    keep_neutral: float = option(0.0, "weight of a term that keeps non-toxic text where it was: the mean squared "
                                 "change (in spreads) of its activations at every hooked layer and position")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "step_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("sparsity", "keep_neutral"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def midpoint_quantiles(sorted_values: Float[Tensor, "m d"], k: int) -> Float[Tensor, "k d"]:
    """Each sorted column read at the k levels (i + 1/2) / k, linearly interpolated: where k sorted samples of the
    same distribution sit on average (reading the ends instead matches a small batch's extremes to the whole
    set's, and teaches the maps to widen every distribution). With k = m it is the column itself."""
    m = len(sorted_values)
    levels = torch.arange(k, dtype=sorted_values.dtype, device=sorted_values.device) + 0.5
    return read_sorted(sorted_values, (levels * m / k - 0.5).clamp(0, m - 1))


def wasserstein2_per_dim(source: Float[Tensor, "n d"], target_sorted: Float[Tensor, "m d"]) -> Float[Tensor, " d"]:
    """Squared 1-D Wasserstein-2 distance per column between the source sample and the target distribution (its
    columns already sorted, read at the source's midpoint quantiles). Differentiable in the source."""
    xs = source.sort(dim=0).values
    return (xs - midpoint_quantiles(target_sorted, len(xs))).pow(2).mean(0)


def moved_share(tensors: dict[str, Tensor]) -> float:
    """The share of a hook's units the map moves (omega != 1 or beta != 0)."""
    return float(((tensors["omega"] != 1) | (tensors["beta"] != 0)).float().mean())


@contextmanager
def frozen(model) -> Iterator[None]:
    """The model's parameters need no gradient while the maps learn (restored on exit)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class _Maps(torch.nn.Module):
    """Per hook a -> a + u (a - centre) + b spread: u = omega - 1 and b, both starting at 0 (the identity). Slope and
    shift about the unsteered toxic mean (`centre`) do not trade off against each other, so Adam converges fast."""

    def __init__(self, centres: dict[str, Tensor], spreads: dict[str, Tensor]):
        super().__init__()
        self.names = list(spreads)
        self.centres, self.spreads = centres, spreads
        self.u = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros_like(s)) for s in spreads.values()])
        self.b = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros_like(s)) for s in spreads.values()])

    def slope_and_shift(self, index: int) -> tuple[Tensor, Tensor]:
        """omega - 1 and beta of hook `index`."""
        name = self.names[index]
        return self.u[index], self.b[index] * self.spreads[name] - self.u[index] * self.centres[name]

    def edit(self, index: int, activation: Tensor) -> Tensor:
        slope, shift = self.slope_and_shift(index)
        if activation.ndim == 4:  # per-head hooks read the flat vectors head-major
            slope, shift = slope.view(activation.shape[-2:]), shift.view(activation.shape[-2:])
        return activation + slope * activation + shift

    def penalty(self) -> Tensor:
        return sum((u.abs().mean() + b.abs().mean()) for u, b in zip(self.u, self.b))  # scale-free: b is in spreads

    def tensors(self) -> dict[str, dict[str, Tensor]]:
        """omega, beta, lo = -inf, hi = +inf per hook; units that stayed within MOVED_TOLERANCE are exactly still."""
        out = {}
        for index, name in enumerate(self.names):
            slope, shift = (t.detach().float() for t in self.slope_and_shift(index))
            still = (self.u[index].abs() < MOVED_TOLERANCE) & (self.b[index].abs() < MOVED_TOLERANCE)
            slope, shift = slope.masked_fill(still, 0.0), shift.masked_fill(still, 0.0)
            out[name] = {"omega": (1 + slope).cpu(), "beta": shift.cpu(),
                         "lo": torch.full_like(slope, -WHOLE_LINE).cpu(), "hi": torch.full_like(slope, WHOLE_LINE).cpu()}
        return out


class ShuffledPasses:
    """Indices 0..n-1 handed out in seeded shuffled passes: `take(k)` gives the next k, reshuffling when a pass
    runs out (at most n at once)."""

    def __init__(self, n: int, seed: int):
        self.n, self.generator = n, torch.Generator().manual_seed(seed)
        self.order, self.cursor = torch.randperm(n, generator=self.generator), 0

    def take(self, k: int) -> list[int]:
        k = min(k, self.n)
        if self.cursor + k > self.n:
            self.order, self.cursor = torch.randperm(self.n, generator=self.generator), 0
        picked = self.order[self.cursor:self.cursor + k].tolist()
        self.cursor += k
        return picked


class _Rows:
    """Tokenised sentences handed out in seeded shuffled passes: `take(k)` gives the next k (token ids, content
    flags)."""

    def __init__(self, model, texts: list[str], seed: int):
        self.ids, self.content, _ = tokenize(model, texts)
        self.passes = ShuffledPasses(len(texts), seed)

    def take(self, k: int) -> tuple[list[list[int]], list[list[bool]]]:
        rows = self.passes.take(k)
        return [self.ids[r] for r in rows], [self.content[r] for r in rows]


class _Step:
    """One training forward: toxic rows (pooled at every hook, maps applied) and, optionally, neutral rows (their
    mean squared change in spreads at every hook and position, against a forward without the maps)."""

    def __init__(self, model, maps: _Maps, names: list[str], spreads: dict[str, Tensor], pooling: str):
        self.model, self.maps, self.names, self.spreads, self.pooling = model, maps, names, spreads, pooling
        self.last_layer, self.backend = last_block(names), backend_of(model)
        self.pad_id = pad_token_id(hf_tokenizer(model))
        self.steer, self.mask, self.toxic_rows = True, None, 0
        self.pooled: dict[str, Tensor] = {}
        self.moved: dict[str, Tensor] = {}
        self.before: dict[str, Tensor] = {}  # per hook: the neutral rows' activations with no map applied

    def hook(self, index: int):
        name = self.names[index]

        def steer(activation, hook):
            if not self.steer:
                self.before[name] = activation
                return activation
            edited = self.maps.edit(index, activation)
            rows, mask = self.toxic_rows, self.mask
            self.pooled[name] = pool(flatten_heads(edited[:rows]), mask[:rows], self.pooling)
            if name in self.before:
                change = flatten_heads(edited[rows:] - self.before[name]) / self.spreads[name]
                weights = mask[rows:, :, None].to(change.dtype)
                self.moved[name] = (change.pow(2) * weights).sum() / (weights.sum() * change.shape[-1]).clamp(min=1)
            return edited
        return steer

    def _forward(self, ids: list[list[int]], content: list[list[bool]]) -> None:
        batch = make_batch(ids, content, self.pad_id, self.model.cfg.device)
        self.mask = batch.pool_mask
        self.backend.run_through(self.model, batch.tokens, batch.attention_mask, self.last_layer)

    def run(self, toxic, neutral=None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(pooled toxic activations, neutral change) per hook, with the graph to the maps."""
        (ids, content), self.toxic_rows = toxic, len(toxic[0])
        self.before.clear()
        self.moved.clear()
        if neutral is not None:
            with torch.no_grad():  # where the neutral rows are without the maps: the reference they keep
                self.steer = False
                try:
                    self._forward(*neutral)
                finally:
                    self.steer = True
            ids, content = ids + neutral[0], content + neutral[1]
            width = max(len(x) for x in ids)  # right padding: pad the reference to the joint width, rows line up
            self.before.update({n: torch.nn.functional.pad(a, (0, 0) * (a.ndim - 2) + (0, width - a.shape[1]))
                                for n, a in self.before.items()})
        with torch.enable_grad():
            self._forward(ids, content)
        return self.pooled, self.moved


@register_method
class Lineas(TransportMethod):
    name = "lineas"
    summary = ("LinEAS-style: every layer's per-dimension affine map learned jointly through the model "
               "(per-layer 1-D Wasserstein loss, L1 sparsity)")
    Options = LineasOptions

    def learn(self, model, data, options, *, progress: bool = True):
        started = time.perf_counter()
        names = resolve_hook_names(model, options.hooks)
        if last_block(names) is None:
            raise ValueError("lineas learns maps inside blocks (blocks.{L}....): the hooks given are outside them")
        if options.responses:
            log.warning("lineas learns through the model, not from pooled responses: responses=%s is not used",
                        options.responses)
        toxic = [t for t, label in zip(data.texts, data.labels) if label == 1]
        clean = [t for t, label in zip(data.texts, data.labels) if label == 0]
        device, dtype = model.cfg.device, model.cfg.dtype
        unsteered = collect_responses(model, [*toxic, *clean], None, names, pooling=options.pooling,
                                      batch_size=options.learn_batch_size, progress=progress).pooled
        centres = {n: t[:len(toxic)].mean(0).to(device, dtype) for n, t in unsteered.items()}
        target = {n: t[len(toxic):].to(device, dtype).sort(dim=0).values for n, t in unsteered.items()}
        spreads = {n: t.std(0).clamp(min=1e-6 * float(t.std(0).mean()) + 1e-12) for n, t in target.items()}
        maps = _Maps(centres, spreads).to(device)
        optimiser = torch.optim.Adam(maps.parameters(), lr=options.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=options.steps)
        step = _Step(model, maps, names, spreads, options.pooling)
        toxic_rows, clean_rows = _Rows(model, toxic, options.seed), _Rows(model, clean, options.seed + 1)
        history = []
        with frozen(model), hooks_applied(model, [(n, step.hook(i)) for i, n in enumerate(names)]):
            for _ in trange(options.steps, desc="lineas", disable=not progress):
                neutral = clean_rows.take(options.step_batch) if options.keep_neutral > 0 else None
                pooled, moved = step.run(toxic_rows.take(options.step_batch), neutral)
                distance = sum((wasserstein2_per_dim(pooled[n], target[n]) / spreads[n].pow(2)).mean()
                               for n in names) / len(names)
                loss = distance + options.sparsity * maps.penalty()
                if neutral is not None:
                    loss = loss + options.keep_neutral * sum(moved.values()) / len(names)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                history.append(float(distance.detach()))
        tensors = maps.tensors()
        moved_fraction = {n: moved_share(t) for n, t in tensors.items()}
        metadata = base_metadata(options, hooks=names, pooling=options.pooling, data=data_metadata(data),
                                 end_to_end=True, loss={"first": history[0], "last": history[-1],
                                                        "every_25": history[::25]},
                                 moved_fraction=moved_fraction, seconds={"total": round(time.perf_counter() - started, 3)})
        return Intervention(self.name, tensors, ModelShape.of(model), metadata, options.strength)

    def from_responses(self, model, responses, options, **metadata):
        raise ValueError("lineas learns through the model (backpropagation), not from pooled responses: "
                         "use learn_intervention")

    def summary_row(self, hook, tensors, strength, metadata) -> dict:
        """Linear-AcT's row with the share of units moved in place of the support width (the whole line here)."""
        row = super().summary_row(hook, tensors, strength, metadata)
        del row["support_median"]
        return {"hook": row.pop("hook"), "dims": row.pop("dims"), "moved": moved_share(tensors), **row}
