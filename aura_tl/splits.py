"""Fixed learn / calibrate / eval splits of RealToxicityPrompts records, so that nothing is evaluated on prompts
that learning or calibration saw.

Each record goes to a split by a hash of its prompt text and the seed (not by file order or Python's RNG), within
its stratum (prompt toxicity >= 0.5 or not), so the split is the same on every run and machine and each split
keeps the source's mix of toxic and non-toxic prompts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SPLITS: dict[str, float] = {"learn": 0.4, "calibrate": 0.2, "eval": 0.4}
SPLIT_SEED = 0
TOXIC = 0.5


def prompt_text(record: dict) -> str:
    prompt = record.get("prompt") or {}
    return str(prompt.get("text") if isinstance(prompt, dict) else record.get("prompt_text", "")).strip()


def prompt_is_toxic(record: dict) -> bool:
    prompt = record.get("prompt") or {}
    score = prompt.get("toxicity") if isinstance(prompt, dict) else record.get("prompt_toxicity")
    return score is not None and float(score) >= TOXIC


def _rank(record: dict, seed: int) -> str:
    return hashlib.sha256(f"{seed}\0{prompt_text(record)}".encode()).hexdigest()


def assign_splits(records: Sequence[dict], seed: int = SPLIT_SEED) -> dict[str, list[dict]]:
    """Every record in exactly one split, stratified by prompt toxicity, in the fractions of `SPLITS`."""
    out: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for toxic in (True, False):
        stratum = sorted((r for r in records if prompt_is_toxic(r) == toxic), key=lambda r: _rank(r, seed))
        start, cumulative = 0, 0.0
        for name, fraction in SPLITS.items():
            cumulative += fraction
            stop = round(cumulative * len(stratum))
            out[name] += stratum[start:stop]
            start = stop
    return out


def select_split(records: Sequence[dict], split: str, seed: int = SPLIT_SEED) -> list[dict]:
    """The records of one split, in their original order."""
    if split not in SPLITS:
        raise ValueError(f"unknown RTP split '{split}'; choose from {', '.join(SPLITS)}")
    chosen = {id(r) for r in assign_splits(records, seed)[split]}
    return [r for r in records if id(r) in chosen]
