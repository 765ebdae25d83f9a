"""Calibration: the strongest strength lambda whose perplexity increase on a calibration text stays within a
budget the user chooses (`--max-ppl-increase 5` = at most +5 % word perplexity). A bisection on lambda in [0, the
learned lambda], assuming perplexity grows with lambda; every measured point is kept and a non-monotone one is
reported.

Calibration text: a file the user gives, else WikiText-2 test documents 20-39 from the local data
(`$AURA_TL_WIKITEXT` or the shared data folder), which the report's perplexity (documents 0-9) never reads.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from aura_tl.models import hf_tokenizer
from aura_tl.paths import local_data_path

log = logging.getLogger(__name__)
WIKITEXT_DOCS = slice(20, 40)


def wikitext_documents(text: str) -> list[str]:
    """Documents of a raw WikiText file: each starts at a level-1 heading ` = Title = `."""
    docs: list[list[str]] = []
    for line in (x for x in text.replace("\r\n", "\n").split("\n") if x.strip()):
        if re.fullmatch(r" = [^=].* = ", line) or not docs:
            docs.append([])
        docs[-1].append(line)
    return ["\n".join(d) + "\n" for d in docs]


def calibration_text(path: str | Path | None = None) -> tuple[str, str]:
    """(text, where it came from): the user's file, or the default WikiText-2 slice."""
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no calibration text at {path}")
        return path.read_text(encoding="utf-8"), str(path)
    wiki = local_data_path(None, "AURA_TL_WIKITEXT", "wikitext2/wiki.test.raw")
    if wiki is None:
        raise FileNotFoundError("calibration needs a text: pass calibration_text=FILE (--calibration-text), or set "
                                "AURA_TL_WIKITEXT to WikiText-2's wiki.test.raw")
    docs = wikitext_documents(wiki.read_text(encoding="utf-8"))[WIKITEXT_DOCS]
    return "".join(docs), f"{wiki} documents {WIKITEXT_DOCS.start}-{WIKITEXT_DOCS.stop - 1}"


def perplexity(model, text: str, window: int = 512, max_tokens: int = 8192, batch_size: int = 8,
               unit: str = "token") -> float:
    """Perplexity of `text` in disjoint windows of `window` tokens (the first `max_tokens` tokens), per token or
    per `word` (the scored tokens' whitespace-separated words: lm-eval's `word_perplexity` unit, which the report
    and the retention budget use; per word a change is about tokens/word times larger than per token)."""
    if unit not in ("token", "word"):
        raise ValueError(f"unit must be 'token' or 'word', got {unit!r}")
    tokenizer = hf_tokenizer(model)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    window = min(window, model.cfg.n_ctx)
    rows = [ids[i:i + window] for i in range(0, len(ids), window) if len(ids[i:i + window]) > 1]
    if not rows:
        raise ValueError("the calibration text is shorter than two tokens")
    total, count, words = 0.0, 0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = min(len(r) for r in chunk)  # equal lengths: no padding in the loss
            tokens = torch.tensor([r[:width] for r in chunk], device=model.cfg.device)
            losses = model(tokens, return_type="loss", loss_per_token=True)
            total += float(losses.double().sum())
            count += losses.numel()
            if unit == "word":  # the words whose tokens were predicted (the first token of a row is not)
                words += sum(len(tokenizer.decode(r[1:width]).split()) for r in chunk)
    if unit == "word" and words == 0:
        raise ValueError("the calibration text has no words")
    return math.exp(total / (count if unit == "token" else words))


def bisect_strength(measure: Callable[[float], float], max_increase_pct: float, steps: int = 6,
                    upper: float = 1.0) -> tuple[float, dict]:
    """The largest lambda in [0, upper] (to upper 2^-steps) with measure(lambda) <= measure(0) (1 + max_increase_pct
    / 100), by bisection (perplexity is assumed to grow with lambda; every measured point is returned and checked)."""
    if max_increase_pct < 0:
        raise ValueError(f"max_ppl_increase must be >= 0 (a percentage), got {max_increase_pct}")
    if upper <= 0:
        raise ValueError(f"calibration needs a strength above 0 to search below, got {upper}")
    measured = {0.0: measure(0.0)}
    budget = measured[0.0] * (1 + max_increase_pct / 100)
    low, high = 0.0, float(upper)
    measured[high] = measure(high)
    if measured[high] <= budget:
        low = high
    else:
        for _ in range(steps):
            middle = (low + high) / 2
            measured[middle] = measure(middle)
            low, high = (middle, high) if measured[middle] <= budget else (low, middle)
    points = sorted(measured.items())
    monotone = all(b[1] >= a[1] * (1 - 1e-6) for a, b in zip(points, points[1:]))
    if not monotone:
        log.warning("perplexity is not monotone in strength on the calibration text: %s", points)
    return low, {"max_ppl_increase": max_increase_pct, "base_ppl": round(measured[0.0], 4),
                 "budget_ppl": round(budget, 4), "chosen_strength": low, "chosen_ppl": round(measured[low], 4),
                 "points": [[s, round(p, 4)] for s, p in points], "monotone": monotone}


def calibrate_strength(model, intervention, max_increase_pct: float, text: str, *, steps: int = 6,
                       unit: str = "word", progress: bool = True) -> tuple[float, dict]:
    """`bisect_strength` on [0, the intervention's strength], on the perplexity of `text` per `unit` with the
    intervention applied at each strength (per word by default: the unit the report's budget is stated in)."""
    bar = tqdm(total=steps + 2, desc="calibrating strength", disable=not progress)

    def ppl_at(strength: float) -> float:
        if strength == 0:
            value = perplexity(model, text, unit=unit)
        else:
            with intervention.with_strength(strength).applied(model):
                value = perplexity(model, text, unit=unit)
        bar.update(1)
        return value

    try:
        strength, record = bisect_strength(ppl_at, max_increase_pct, steps, upper=float(intervention.strength))
        return strength, {**record, "unit": unit}
    finally:
        bar.close()
