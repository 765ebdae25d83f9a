"""Calibration: the strongest strength lambda whose perplexity increase stays within a budget the user chooses
(`--max-ppl-increase 5` = at most +5 % word perplexity) on every text of a panel. A bisection on lambda in [0, the
learned lambda], assuming perplexity grows with lambda; every measured point is kept and a non-monotone one is
reported.

The budget holds on each kind of text of the retention panel (`aura_tl.retention`), not on one: the calibration
text read as long windows and as short independent paragraphs, PIQA- and HellaSwag-length contexts, and the model's
own continuations of non-toxic prompts, where an edit may cost several times what it costs on long documents
(SmolLM2's old default: +3.1 % on long WikiText windows, +18.5 % on PIQA-length texts). The worst kind decides.

Calibration text: a file the user gives, else WikiText-2 test documents 20-39 from the local data
(`$AURA_TL_WIKITEXT` or the shared data folder), which the report's perplexity (documents 0-9) never reads, else
the start of that slice as shipped with aura-tl (`calibration_sets/`: documents 20-23, more than calibration's
`PANEL_TOKENS` of each kind read), so a budget means the same with or without the data folder.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from aura_tl.data import shipped_texts
from aura_tl.models import hf_tokenizer, start_token_id
from aura_tl.paths import local_data_path
from aura_tl.prompt_scope import prompt_before, prompt_marked

log = logging.getLogger(__name__)
WIKITEXT_DOCS = slice(20, 40)
# calibration's texts as the local data gives them, for a fresh install (provenance and licences in its README;
# rebuilt by bench/bundle_concept_data.py): WikiText's start, PIQA / HellaSwag texts, `calibrate` prompts
SHIPPED_CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration_sets"
SHIPPED_WIKITEXT_DOCS = slice(WIKITEXT_DOCS.start, WIKITEXT_DOCS.start + 4)  # 108 k characters: the panel reads ~10 k


def wikitext_documents(text: str) -> list[str]:
    """Documents of a raw WikiText file: each starts at a level-1 heading ` = Title = `."""
    docs: list[list[str]] = []
    for line in (x for x in text.replace("\r\n", "\n").split("\n") if x.strip()):
        if re.fullmatch(r" = [^=].* = ", line) or not docs:
            docs.append([])
        docs[-1].append(line)
    return ["\n".join(d) + "\n" for d in docs]


def wikitext_path() -> Path | None:
    """WikiText-2's raw test file where it is local (`$AURA_TL_WIKITEXT`, else the shared data folder), else None."""
    return local_data_path(None, "AURA_TL_WIKITEXT", "wikitext2/wiki.test.raw")


def shipped_calibration(name: str) -> list[str]:
    """The texts of calibration set `name` as shipped (`SHIPPED_CALIBRATION_DIR`), in order."""
    return shipped_texts(SHIPPED_CALIBRATION_DIR, name)


def calibration_text(path: str | Path | None = None) -> tuple[str, str]:
    """(text, where it came from): the user's file, else the default WikiText-2 slice from the local data, else its
    start as shipped (the same rows for calibration's `PANEL_TOKENS`: tests/test_retention.py)."""
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no calibration text at {path}")
        return path.read_text(encoding="utf-8"), str(path)
    wiki = wikitext_path()
    if wiki is None:
        log.info("no local WikiText-2 (AURA_TL_WIKITEXT): calibrating on its documents %d-%d shipped with aura-tl",
                 SHIPPED_WIKITEXT_DOCS.start, SHIPPED_WIKITEXT_DOCS.stop - 1)
        return ("".join(shipped_calibration("wikitext")),
                f"WikiText-2 test documents {SHIPPED_WIKITEXT_DOCS.start}-{SHIPPED_WIKITEXT_DOCS.stop - 1} (shipped)")
    return "".join(wikitext_slice(WIKITEXT_DOCS)), f"{wiki} documents {WIKITEXT_DOCS.start}-{WIKITEXT_DOCS.stop - 1}"


def wikitext_slice(docs: slice) -> list[str] | None:
    """WikiText-2 test documents `docs` where the file is local (`wikitext_path`), else None."""
    path = wikitext_path()
    return None if path is None else wikitext_documents(path.read_text(encoding="utf-8"))[docs]


LOGITS_BUDGET = 1 << 28  # logits held at once by `perplexity` (1 GiB in float32): Gemma's 262k vocabulary -> 2 rows


def perplexity(model, text: str, window: int = 512, max_tokens: int = 8192, batch_size: int = 8,
               unit: str = "token") -> float:
    """Perplexity of `text` (its first `max_tokens` tokens) in disjoint windows, each read from BOS (`window`
    tokens with it), per token or per `word` (the scored text's whitespace-separated words: lm-eval's
    `word_perplexity` unit, which the report and the retention budget use; per word a change is about
    tokens/word times larger than per token). A window that starts mid-text without BOS is what some models
    (Gemma) never saw in training: its loss would measure that, not the text."""
    return _perplexity_from_bos(model, window_rows(model, text, max_tokens, window), unit, batch_size)


def window_rows(model, text: str, max_tokens: int, window: int = 512) -> list[list[int]]:
    """The text's first `max_tokens` tokens in disjoint rows that fit a `window` with BOS before each."""
    ids = hf_tokenizer(model)(text, add_special_tokens=False)["input_ids"][:max_tokens]
    width = min(window, model.cfg.n_ctx) - 1
    return [ids[i:i + width] for i in range(0, len(ids), width)]


PARAGRAPH_TOKENS = 256


def paragraph_lines(text: str) -> list[str]:
    """The text's non-empty lines, stripped, WikiText headings (` = Title = `) dropped: its paragraphs."""
    return [line.strip() for line in text.splitlines() if line.strip() and not re.fullmatch(r"(= )+.*( =)+", line.strip())]


def paragraphs(text: str, max_tokens: int = 8192, tokenizer=None) -> list[str]:
    """The text's non-empty lines (WikiText: paragraphs and headings), headings (` = Title = `) dropped, up to
    about `max_tokens` tokens in all when a tokenizer is given (else the first 200)."""
    lines = paragraph_lines(text)
    if tokenizer is None:
        return lines[:200]
    kept, total = [], 0
    for line in lines:
        if total >= max_tokens:
            break
        kept.append(line)
        total += min(PARAGRAPH_TOKENS, len(tokenizer(line, add_special_tokens=False)["input_ids"]) + 1)
    return kept


def paragraph_perplexity(model, texts: list[str], unit: str = "token", batch_size: int = 16) -> float:
    """Perplexity over `texts` each scored alone from its own start (BOS, then at most PARAGRAPH_TOKENS tokens
    with it): what a model sees from a user's short inputs."""
    return _perplexity_from_bos(model, short_rows(model, texts), unit, batch_size)


def short_rows(model, texts: list[str], max_tokens: int | None = None, row_tokens: int | None = None
               ) -> list[list[int]]:
    """Each text's tokens cut to fit after BOS in a short row (PARAGRAPH_TOKENS, or `row_tokens` when fewer),
    empty ones dropped; the first texts up to about `max_tokens` in all (None: every text)."""
    tokenizer = hf_tokenizer(model)
    length = min(PARAGRAPH_TOKENS, model.cfg.n_ctx) - 1
    length = length if row_tokens is None else min(length, row_tokens)
    rows, total = [], 0
    for text in texts:
        if max_tokens is not None and total >= max_tokens:
            break
        row = tokenizer(text, add_special_tokens=False)["input_ids"][:length]
        if row:
            rows.append(row)
            total += len(row)
    return rows


def words_per_row(model, rows: list[list[int]]) -> list[int]:
    """Each token row's whitespace-separated words as decoded: lm-eval's `word_perplexity` unit, the budget's."""
    tokenizer = hf_tokenizer(model)
    return [len(tokenizer.decode(r).split()) for r in rows]


def _perplexity_from_bos(model, rows: list[list[int]], unit: str, batch_size: int) -> float:
    """exp(mean -log p) of every token of every row, each row read after BOS (see `token_logprobs_from_bos`)."""
    if unit not in ("token", "word"):
        raise ValueError(f"unit must be 'token' or 'word', got {unit!r}")
    rows = [r for r in rows if r]
    if not rows:
        raise ValueError("the calibration text has no tokens")
    picked = token_logprobs_from_bos(model, rows, batch_size)
    total = -sum(float(p.astype(np.float64).sum()) for p in picked)
    if unit == "token":
        return math.exp(total / sum(len(r) for r in rows))
    words = sum(words_per_row(model, rows))
    if words == 0:
        raise ValueError("the calibration text has no words")
    return math.exp(total / words)


def token_logprobs_from_bos(model, rows: list[list[int]], batch_size: int = 8, progress: bool = False,
                            prompt_lengths: list[int] | None = None) -> list[Float[np.ndarray, "tokens"]]:
    """log p of each token of each row (token ids, no BOS), each row read alone after the tokenizer's BOS (EOS where
    it has none): rows are batched by length and right-padded (causal: no real token sees the padding), at most
    `batch_size` rows at once and fewer where their logits would pass `LOGITS_BUDGET`. Returned in input order.
    With `prompt_lengths`, each row's first tokens are a prompt it continues (`aura_tl.prompt_scope`: an
    intervention with steer_prompt=False edits from the prompt's last token on)."""
    tokenizer = hf_tokenizer(model)
    bos = start_token_id(tokenizer)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out: list = [None] * len(rows)
    longest = max((len(r) for r in rows), default=0)
    batch_size = max(1, min(batch_size, LOGITS_BUDGET // ((longest + 1) * model.cfg.d_vocab)))
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="scoring from BOS", disable=not progress, leave=False):
            chunk = order[start:start + batch_size]
            width = max(len(rows[i]) for i in chunk)
            tokens = torch.tensor([[bos] + rows[i] + [bos] * (width - len(rows[i])) for i in chunk],
                                  device=model.cfg.device)
            # after BOS, a prompt of n tokens ends at position n: edits start there
            prompt = None if prompt_lengths is None else prompt_before([prompt_lengths[i] for i in chunk], width + 1,
                                                                        model.cfg.device)
            with prompt_marked(prompt):
                logits = model(tokens)[:, :-1].float()
            # log p(next token) without a second vocabulary-sized tensor: its logit minus the log normaliser
            picked = (logits.gather(-1, tokens[:, 1:, None])[..., 0] - logits.logsumexp(-1)).cpu().numpy()
            for row, i in enumerate(chunk):
                out[i] = picked[row, :len(rows[i])]
    return out


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


def calibrate_strength(model, intervention, max_increase_pct: float, panel: dict[str, list[list[int]]], *,
                       steps: int = 5, unit: str = "word", progress: bool = True) -> tuple[float, dict]:
    """`bisect_strength` on [0, the intervention's strength], on the worst relative perplexity increase over the
    kinds of text of `panel` (name -> token rows, each scored alone after BOS: `aura_tl.retention.panel_rows`) per
    `unit` with the intervention applied at each strength (per word by default: the unit the report's budget is
    stated in). The record keeps every kind's perplexity at every point."""
    bar = tqdm(total=(steps + 2) * len(panel), desc="calibrating strength", disable=not progress)
    measured: dict[float, dict[str, float]] = {}

    def at(strength: float) -> dict[str, float]:
        values = {}
        with (intervention.with_strength(strength).applied(model) if strength else nullcontext()):
            for name, rows in panel.items():
                values[name] = _perplexity_from_bos(model, rows, unit, 8)
                bar.update(1)
        measured[strength] = values
        return values

    base = at(0.0)

    def worst_ratio(strength: float) -> float:
        values = base if strength == 0 else at(strength)
        return max(values[name] / base[name] for name in panel)

    try:
        strength, record = bisect_strength(worst_ratio, max_increase_pct, steps, upper=float(intervention.strength))
    finally:
        bar.close()
    chosen = measured[strength]
    return strength, {
        **record, "unit": unit, "measure": "worst ratio over the panel",
        "base_ppl": {k: round(v, 4) for k, v in base.items()}, "chosen_ppl": {k: round(v, 4) for k, v in chosen.items()},
        "budget_ratio": record.pop("budget_ppl"),
        "panel": {name: [[s, round(v[name], 4)] for s, v in sorted(measured.items())] for name in panel}}
