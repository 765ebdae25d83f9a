"""Learn AurA, Det0 and Damp interventions: responses -> AUROC per neuron -> alpha per neuron."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from aura_tl import __version__
from aura_tl.auroc import auroc as compute_auroc
from aura_tl.data import ConceptData
from aura_tl.hooks import DEFAULT_HOOKS
from aura_tl.intervention import FUSION_METHODS, SCALING_METHODS, Intervention
from aura_tl.models import ModelShape
from aura_tl.responses import Responses, collect_responses

log = logging.getLogger(__name__)
DEFAULT_NUM_EXPERTS = 500
DEFAULT_DAMP_ALPHA = 0.5


def aura_alphas(auroc: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
    """AurA: alpha = 1 - Gini = 1 - 2 (AUROC - 0.5) for experts (AUROC > 0.5), 1 elsewhere."""
    return torch.where(auroc > 0.5, 1 - 2 * (auroc - 0.5), torch.ones_like(auroc)).float()


def topk_alphas(aurocs: dict[str, Tensor], k: int, value: float) -> dict[str, Tensor]:
    """Det0 (value 0) / Damp (value alpha): `value` on the k highest-AUROC neurons across all hooks, 1 elsewhere."""
    names = list(aurocs)
    flat = torch.cat([aurocs[n].flatten() for n in names])
    if not 0 < k <= flat.numel():
        raise ValueError(f"num_experts must be in 1..{flat.numel()}, got {k}")
    alphas = torch.ones_like(flat, dtype=torch.float32)
    alphas[flat.topk(k).indices] = value
    sizes = [aurocs[n].numel() for n in names]
    return dict(zip(names, alphas.split(sizes)))


def alphas_for(method: str, aurocs: dict[str, Tensor], num_experts: int = DEFAULT_NUM_EXPERTS,
               damp_alpha: float = DEFAULT_DAMP_ALPHA) -> dict[str, Tensor]:
    if method == "aura":
        return {k: aura_alphas(v) for k, v in aurocs.items()}
    if method == "det0":
        return topk_alphas(aurocs, num_experts, 0.0)
    if method == "damp":
        if not 0.0 <= damp_alpha <= 1.0:
            raise ValueError(f"damp_alpha must be in [0, 1], got {damp_alpha}")
        return topk_alphas(aurocs, num_experts, damp_alpha)
    raise ValueError(f"unknown scaling method '{method}'; choose from {SCALING_METHODS}")


def auroc_summary(aurocs: dict[str, Tensor]) -> dict[str, dict]:
    return {k: {"experts": int((v > 0.5).sum()), "max": round(float(v.max()), 6), "mean": round(float(v.mean()), 6)}
            for k, v in aurocs.items()}


def learn_intervention(
    model,
    data: ConceptData,
    method: str = "aura",
    hooks: str | Sequence[str] = DEFAULT_HOOKS,
    *,
    pooling: str = "max",
    num_experts: int = DEFAULT_NUM_EXPERTS,
    damp_alpha: float = DEFAULT_DAMP_ALPHA,
    strength: float = 1.0,
    batch_size: int = 32,
    responses_path: str | Path | None = None,
    progress: bool = True,
    **destein_kwargs,
) -> Intervention:
    """Learn `method` on `model` from `data` (toxic = 1). With `responses_path`, pooled responses are saved there
    and reused on the next call with the same model, hooks, pooling and sentences (no recomputation)."""
    if method in FUSION_METHODS:
        from aura_tl.destein import learn_destein

        return learn_destein(model, strength=strength, batch_size=min(batch_size, 16), progress=progress,
                             **destein_kwargs)
    if method not in SCALING_METHODS:
        raise ValueError(f"unknown method '{method}'; choose from {SCALING_METHODS + FUSION_METHODS}")
    data.require_both_classes()
    started = time.perf_counter()
    responses = _responses(model, data, hooks, pooling, batch_size, responses_path, progress)
    collected = time.perf_counter()
    aurocs = {name: compute_auroc(pooled, responses.labels) for name, pooled in responses.pooled.items()}
    alphas = alphas_for(method, aurocs, num_experts, damp_alpha)
    metadata = {
        "version": __version__,
        "hooks": list(alphas),
        "pooling": pooling,
        "data": {"source": data.source, "layout": data.layout, "n": len(data), "counts": data.counts, **data.info},
        "auroc": auroc_summary(aurocs),
        "seconds": {"responses": round(collected - started, 3), "auroc": round(time.perf_counter() - collected, 3)},
    }
    if method != "aura":
        metadata.update(num_experts=num_experts)
    if method == "damp":
        metadata.update(damp_alpha=damp_alpha)
    return Intervention(method, alphas, ModelShape.of(model), metadata, strength, aurocs)


def _responses(model, data: ConceptData, hooks, pooling: str, batch_size: int, path, progress: bool) -> Responses:
    key = {"model": str(model.cfg.model_name), "pooling": pooling, "n": len(data),
           "texts_hash": hash_texts(data.texts)}
    if path and Path(path).is_file():
        cached = Responses.load(path)
        if all(cached.metadata.get(k) == v for k, v in key.items()):
            log.info("reusing responses from %s", path)
            return cached
        log.warning("responses at %s were made for other data or settings; recomputing", path)
    responses = collect_responses(model, data.texts, data.labels, hooks, pooling=pooling, batch_size=batch_size,
                                  progress=progress)
    responses.metadata.update(key)
    if path:
        responses.save(path)
    return responses


def hash_texts(texts: Sequence[str]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]
