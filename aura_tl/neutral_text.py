"""Neutral text a learned gate is fitted to stay closed on: the model's own samples from BOS (text in its own
distribution, which needs no data and covers the styles a user brings: instructions, how-tos, prose), WikiText-2
paragraphs, task-length texts, continued prompts, polite rewrites and tweets, each from a part no report or
calibration reads.

A source list is one string, e.g. `own:512,wikitext:300`: `own:N` is N samples of `OWN_SAMPLE_TOKENS` tokens (top-p
0.95, seeded); `wikitext:N` is the first N paragraphs of WikiText-2 test documents 40 on (`$AURA_TL_WIKITEXT` or
the shared data folder); `piqa:N` / `hellaswag:N` are the PIQA- / HellaSwag-length texts (context and gold answer)
of N validation documents from `GATE_TASK_DOCS`, which neither the report nor calibration reads (at most 500); these
three ship with the package (`neutral_sets/`, the first 500 of each, the same texts) and are read from there when
the data is not local. `continued:N` is N non-toxic `learn`-split RTP prompts (local, else shipped) each with the
unsteered model's greedy continuation (the panel's own continuations read `calibrate` and `eval`); `paradetox:N` is
N ParaDetox human non-toxic rewrites (polite text on a toxic sentence's subject) from pair `GATE_NEAR_TEXTS_START`
(1000) on (the report's held-out check and calibration read the pairs before it: `aura_tl.retention`);
`davidson:N` is N Davidson tweets labelled "neither" (chat-like text, where every gate opens) from the same index on
(these two skipped with a warning when not local); any other item is a text file, one text per non-empty line;
`none` is nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from aura_tl.calibrate import paragraph_lines, wikitext_slice
from aura_tl.data import shipped_texts
from aura_tl.gating import COUNTED_SOURCE, SOURCE_NAMES
from aura_tl.generation import SamplingConfig, generate_ids
from aura_tl.models import hf_tokenizer, start_token_id
from aura_tl.retention import (GATE_NEAR_TEXTS_START, GATE_SETS_DIR, GATE_TASK_DOCS, NEAR_TOXIC, TASK_SETS,
                               near_toxic_texts, nontoxic_prompts, own_continuations, task_texts)

log = logging.getLogger(__name__)
OWN_SAMPLE_TOKENS = 64
WIKITEXT_NEUTRAL_DOCS = slice(40, None)  # after the report's (0-9) and calibration's (20-39) documents
# the document-like sources (wikitext, piqa, hellaswag) as the local data gives them, for a fresh install: a gate's
# neutral text is then the same with or without the data folder (provenance and licences in the folder's README)
SHIPPED_DIR = GATE_SETS_DIR
SHIPPED_SOURCES = ("wikitext", *TASK_SETS.values())
SHIPPED_TEXTS = GATE_TASK_DOCS.stop - GATE_TASK_DOCS.start  # of each: all `piqa:N` / `hellaswag:N` may read


def own_samples(model, n: int, *, tokens: int = OWN_SAMPLE_TOKENS, seed: int = 0, batch_size: int = 64,
                progress: bool = True) -> list[str]:
    """`n` texts the unsteered model writes from BOS alone (top-p 0.95, each batch seeded from `seed`)."""
    tokenizer = hf_tokenizer(model)
    start = start_token_id(tokenizer)
    texts: list[str] = []
    with torch.inference_mode():
        for first in tqdm(range(0, n, batch_size), desc="own samples", disable=not progress, leave=False):
            rows = min(batch_size, n - first)
            config = SamplingConfig(max_new_tokens=tokens, do_sample=True, top_p=0.95, seed=seed + first)
            texts += [tokenizer.decode(ids, skip_special_tokens=True) for ids in
                      generate_ids(model, [[start]] * rows, config)]
    return [t for t in texts if t.strip()]


def shipped_neutral(name: str, n: int) -> list[str]:
    """The first `n` texts of source `name` as shipped in `SHIPPED_DIR` (the texts the local data gives, written by
    `bench/bundle_concept_data.py`), with a warning when `n` is more than shipped."""
    texts = shipped_texts(SHIPPED_DIR, name)
    if n > len(texts):
        log.warning("%s:%d: aura-tl ships %d of these texts (the rest need the local data): using those", name, n,
                    len(texts))
    log.info("%s: no local data, the %d texts shipped with aura-tl", name, min(n, len(texts)))
    return texts[:n]


def wikitext_neutral(model, n: int) -> list[str]:
    """The first `n` paragraphs of WikiText-2 test documents 40 on: from the local file, else as shipped."""
    docs = wikitext_slice(WIKITEXT_NEUTRAL_DOCS)
    return shipped_neutral("wikitext", n) if docs is None else paragraph_lines("".join(docs))[:n]


TASK_KINDS = {name: kind for kind, name in TASK_SETS.items()}  # source name: the retention panel's kind


def task_neutral(kind: str, n: int) -> list[str]:
    """The `kind` texts ("piqa" or "hellaswag") of the first `n` documents of `GATE_TASK_DOCS`: from the local data,
    else as shipped (`aura_tl.retention.SHIPPED_TASK_DOCS`)."""
    available = GATE_TASK_DOCS.stop - GATE_TASK_DOCS.start
    if n > available:
        raise ValueError(f"{kind}:{n}: gates may read at most {available} task documents (the rest are the report's "
                         f"and calibration's)")
    return task_texts(slice(GATE_TASK_DOCS.start, GATE_TASK_DOCS.start + n), (TASK_KINDS[kind],))[TASK_KINDS[kind]]


def continued_neutral(model, n: int) -> list[str]:
    """The first `n` non-toxic `learn` prompts (local records, else the shipped ones: `aura_tl.data.prompt_records`)
    with the unsteered model's greedy continuations."""
    return own_continuations(model, nontoxic_prompts("learn", n))


def near_toxic_neutral(kind: str, n: int) -> list[str]:
    """`n` texts of the near-toxic `kind` (`aura_tl.retention.NEAR_TOXIC`) from `GATE_NEAR_TEXTS_START` on, after
    the report's held-out and calibration's; [] with a warning when not local."""
    texts = near_toxic_texts(slice(GATE_NEAR_TEXTS_START, GATE_NEAR_TEXTS_START + n), (kind,)).get(kind)
    if texts is None:
        log.warning("no local %s found: the gate's neutral text leaves them out", kind)
        return []
    return texts


# each counted source's texts from (model, N, seed, progress); the names are declared in aura_tl.gating
READERS: dict[str, Callable[..., list[str]]] = {
    "own": lambda model, n, seed, progress: own_samples(model, n, seed=seed, progress=progress),
    "wikitext": lambda model, n, seed, progress: wikitext_neutral(model, n),
    "piqa": lambda model, n, seed, progress: task_neutral("piqa", n),
    "hellaswag": lambda model, n, seed, progress: task_neutral("hellaswag", n),
    "continued": lambda model, n, seed, progress: continued_neutral(model, n),
    "paradetox": lambda model, n, seed, progress: near_toxic_neutral(NEAR_TOXIC[0], n),
    "davidson": lambda model, n, seed, progress: near_toxic_neutral(NEAR_TOXIC[1], n),
}


def neutral_texts(model, sources: str, *, seed: int = 0, progress: bool = True) -> list[str]:
    """The texts `sources` names (see the module docstring), in order."""
    texts: list[str] = []
    for item in (s.strip() for s in str(sources).split(",")):
        if not item or item.lower() == "none":
            continue
        counted = COUNTED_SOURCE.fullmatch(item)
        if counted:
            texts += READERS[counted[1]](model, int(counted[2]), seed, progress)
            continue
        path = Path(item).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"neutral text source {item!r} is neither {SOURCE_NAMES}, none nor a file")
        texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts
