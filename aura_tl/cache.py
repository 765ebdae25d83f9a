"""Learned interventions cached in the user cache dir, so that a second run with the same model, method, options
and concept data starts in seconds.

The key hashes: a fingerprint of the model's weights (a strided sample of every parameter, its shape and dtype: the
same for a GGUF file, its converted folder or a Hub name, and cheap for any size), the method, its options (all but
those declared `learned=False`, such as `strength`, applied after loading unless calibration caps at it), the
concept data's texts and labels, and the package version. A cached file that cannot be read, fits another model or
carries another key is relearned, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from aura_tl._version import __version__
from aura_tl.data import ConceptData
from aura_tl.distributed import shard
from aura_tl.intervention import Intervention
from aura_tl.io import hash_texts
from aura_tl.learn import concept_data_for, learn_intervention
from aura_tl.methods import get_method
from aura_tl.models import cache_dir, model_fingerprint
from aura_tl.options import learned_values

log = logging.getLogger(__name__)


def intervention_cache_dir() -> Path:
    return cache_dir() / "interventions"


def intervention_key(model, method: str, options, data: ConceptData | None) -> str:
    """What a learned intervention depends on, hashed."""
    parts = {"model": model_fingerprint(model), "method": method, "options": learned_values(options),
             "version": __version__,
             "data": None if data is None else {"texts": hash_texts(data.texts),
                                                "labels": hash_texts(map(str, data.labels))}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class CachedLearn:
    """A learned intervention and where it came from (for the log and lm-eval's results JSON)."""

    intervention: Intervention
    path: Path | None
    hit: bool
    seconds: float

    def describe(self) -> dict:
        iv, options = self.intervention, self.intervention.metadata.get("options", {})
        data = iv.metadata.get("data", {})
        return {"method": iv.method, "strength": iv.strength, "hooks": options.get("hooks"),
                "data": data.get("source") if isinstance(data, dict) else data, "gated": iv.gated,
                "cache_file": str(self.path) if self.path else None, "cache_hit": self.hit,
                "seconds": round(self.seconds, 2)}


def learn_cached(model, method: str, options, *, use_cache: bool = True, progress: bool = True) -> CachedLearn:
    """`learn_intervention(model, None, method, options)`, read from the cache when an entry with the same key exists
    and is sound, else learned and written there (atomically)."""
    started = time.perf_counter()
    spec = get_method(method)
    data = concept_data_for(options, model=model, progress=progress) if spec.needs_data else None
    if not use_cache:
        return CachedLearn(learn_intervention(model, data, method, options, progress=progress), None, False,
                           time.perf_counter() - started)
    key = intervention_key(model, method, options, data)
    path = intervention_cache_dir() / f"{method}-{key}.safetensors"
    cached = _read_entry(path, model, method, key)
    rank, world = shard()
    if world > 1:  # ranks learn together (sharded), so they must agree: any miss means all learn
        hits: list = [None] * world
        torch.distributed.all_gather_object(hits, cached is not None)
        cached = cached if all(hits) else None
    if cached is not None:
        if options.max_ppl_increase is None:
            cached = cached.with_strength(options.strength)
        cached = cached.with_steer_prompt(options.steer_prompt)
        return CachedLearn(cached, path, True, time.perf_counter() - started)
    intervention = learn_intervention(model, data, method, options, progress=progress)
    intervention.metadata["cache_key"] = key
    if rank == 0:
        try:
            intervention.save(path)
        except OSError as error:  # a read-only cache must not cost the learned result
            log.warning("could not cache the intervention at %s (%s)", path, error)
            path = None
    return CachedLearn(intervention, path, False, time.perf_counter() - started)


def _read_entry(path: Path, model, method: str, key: str) -> Intervention | None:
    """The cached intervention at `path` when it is sound and carries `key`; None (with a warning) otherwise."""
    if not path.is_file():
        return None
    try:
        cached = Intervention.load(path)
        cached.check_compatible(model)
        if cached.method != method or cached.metadata.get("cache_key") != key:
            raise ValueError("its key does not match")
        return cached
    except (ValueError, OSError, RuntimeError) as error:
        log.warning("cached intervention %s is unusable (%s): relearning", path, error)
        return None


def clear_cache() -> int:
    """Delete every cached intervention; returns how many files went."""
    files = list(intervention_cache_dir().glob("*.safetensors"))
    for file in files:
        file.unlink(missing_ok=True)
    return len(files)


__all__ = ["CachedLearn", "clear_cache", "intervention_cache_dir", "intervention_key", "learn_cached",
           "model_fingerprint"]
