"""The retention panel: the kinds of text an edit's perplexity cost is measured on, because it costs more on some
than on long documents (`docs/results/retention-panel.md`). One definition, read on two sets of slices that never
meet: calibration's (a budget is kept on the worst kind) and the report's (`bench/retention_panel.py`).

Kinds, each text scored alone after BOS:
- long windows: a text in 512-token windows (WikiText-2 documents: the report reads 0-9, calibration 20-39);
- short paragraphs: the same text's paragraphs, each alone (at most 256 tokens);
- PIQA-length: `Question: <goal>\\nAnswer: <correct solution>`, the prompt of lm-eval's `piqa` with its answer;
- HellaSwag-length: lm-eval's `hellaswag` query and its gold ending;
- own continuations: non-toxic RTP prompts with the unsteered model's greedy continuation (text it writes itself);
- near-toxic neutral text (`NEAR_TOXIC`, only where asked: where every gate opens): ParaDetox human non-toxic
  rewrites (polite text on a toxic sentence's subject) and Davidson tweets labelled "neither" (chat-like), each alone.
The report reads the first PIQA / HellaSwag validation documents (at most `REPORT_TASK_DOCS`) and `eval` prompts;
calibration reads PIQA / HellaSwag validation documents from `CALIBRATION_TASK_DOCS` on and `calibrate` prompts; the
documents between (`GATE_TASK_DOCS`) are for a gate's neutral text (`aura_tl.neutral_text`), read by neither. Of the
near-toxic texts (in file order) the report's held-out check reads the first (`HELD_OUT_NEAR_TEXTS`), calibration the
next (`CALIBRATION_NEAR_TEXTS`), gates from `GATE_NEAR_TEXTS_START` on. Calibration's WikiText start, PIQA /
HellaSwag texts and `calibrate` prompts ship with aura-tl (`calibration_sets/`, read when the data is not local), so
the `full` panel is the same on a fresh install; the report's slices and the near-toxic texts are local data only. A
kind whose data is not there is left out with a warning (the record names the kinds read).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from aura_tl.calibrate import (SHIPPED_CALIBRATION_DIR, WIKITEXT_DOCS, paragraphs, shipped_calibration, short_rows,
                               wikitext_slice, window_rows)
from aura_tl.data import prompt_records, read_davidson_neither, read_jsonl, read_paradetox_pairs, shipped_texts
from aura_tl.generation import SamplingConfig, generate
from aura_tl.models import hf_tokenizer
from aura_tl.paths import local_data_path
from aura_tl.splits import prompt_is_toxic, prompt_text

log = logging.getLogger(__name__)

PANEL = ("long windows", "short paragraphs", "PIQA-length", "HellaSwag-length", "own continuations")
TEXT_KINDS = PANEL[:2]  # the kinds read from one text (the calibration text, or WikiText-2 documents)
PANEL_TOKENS = 2048  # per kind in calibration: ~10 s a point for SmolLM2 on 2 CPU cores; ratios are paired
CONTINUATION_TOKENS = 32
# calibration's own continuations: more than the report's 96, because the budget binds on them (the 45 within 2,048
# tokens read +1.86 % where the report's 96 read +2.5 %: docs/results/sites.md); `calibrate` has 140 non-toxic
CALIBRATION_OWN_PROMPTS = 128
REPORT_TASK_DOCS = 1000  # the report reads at most the first 1,000 task documents
GATE_TASK_DOCS = slice(REPORT_TASK_DOCS, 1500)  # neutral text for gates: neither the report nor calibration reads it
CALIBRATION_TASK_DOCS = slice(1500, 1838)  # the last 338 of PIQA's 1,838 validation documents; HellaSwag has 10,042
REPORT_WIKITEXT_DOCS = slice(0, 10)
NEAR_TOXIC = ("ParaDetox rewrites", "Davidson neither")
HELD_OUT_NEAR_TEXTS = 500  # the report's held-out check reads at most the first 500 of each near-toxic kind
CALIBRATION_NEAR_TEXTS = slice(HELD_OUT_NEAR_TEXTS, 1000)
GATE_NEAR_TEXTS_START = CALIBRATION_NEAR_TEXTS.stop  # gates' `paradetox:N` / `davidson:N` from here on


@dataclass(frozen=True)
class PanelSlices:
    """Which documents and prompts each kind reads."""

    wikitext_docs: slice
    task_docs: slice
    prompt_split: str
    near_texts: slice = field(default_factory=lambda: slice(0, 0))  # none


CALIBRATION_SLICES = PanelSlices(WIKITEXT_DOCS, CALIBRATION_TASK_DOCS, "calibrate", CALIBRATION_NEAR_TEXTS)


def report_slices(docs: int, held_out: int = 0) -> PanelSlices:
    """The report's reading: WikiText-2 documents 0-9, the first `docs` task documents, `eval` prompts, and the first
    `held_out` near-toxic texts of each kind."""
    if docs > REPORT_TASK_DOCS:
        raise ValueError(f"the report reads at most {REPORT_TASK_DOCS} task documents (gates' neutral text and "
                         f"calibration read from there on), got {docs}")
    if held_out > HELD_OUT_NEAR_TEXTS:
        raise ValueError(f"the report reads at most {HELD_OUT_NEAR_TEXTS} near-toxic texts of a kind (calibration and "
                         f"gates read from there on), got {held_out}")
    return PanelSlices(REPORT_WIKITEXT_DOCS, slice(0, docs), "eval", slice(0, held_out))


def piqa_docs(path=None) -> list[dict] | None:
    """PIQA validation documents (goal, sol1, sol2, label) from local data (`path`, `$AURA_TL_PIQA`, shared data)."""
    found = local_data_path(path, "AURA_TL_PIQA", "piqa/validation_merged.jsonl", name="piqa_path")
    return None if found is None else [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"],
                                        "label": int(r["label"])} for r in read_jsonl(found)]


HELLASWAG_FIELDS = ("ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type",
                    "label")


def hellaswag_docs(path=None) -> list[dict] | None:
    """HellaSwag validation documents (the Hugging Face layout) from local data (`path`, `$AURA_TL_HELLASWAG`,
    shared data)."""
    found = local_data_path(path, "AURA_TL_HELLASWAG", "hellaswag/validation.jsonl", name="hellaswag_path")
    return None if found is None else [{k: r[k] for k in HELLASWAG_FIELDS if k in r} for r in read_jsonl(found)]


TASK_SETS = {"PIQA-length": "piqa", "HellaSwag-length": "hellaswag"}  # kind: the name of its shipped sets
GATE_SETS_DIR = Path(__file__).resolve().parent / "neutral_sets"  # gates' neutral text (`aura_tl.neutral_text`)
# the task documents that ship with aura-tl, read where the data is not local: (documents, the folder of their sets)
SHIPPED_TASK_DOCS = ((CALIBRATION_TASK_DOCS, SHIPPED_CALIBRATION_DIR), (GATE_TASK_DOCS, GATE_SETS_DIR))


def task_texts(docs: slice, kinds: tuple[str, ...] = ("PIQA-length", "HellaSwag-length")) -> dict[str, list[str]]:
    """PIQA- and HellaSwag-length texts (those of `kinds`) of the documents `docs`: each context with its gold
    answer, as lm-eval's tasks prompt them; without local data, as shipped where `docs` lies in a range of
    `SHIPPED_TASK_DOCS`, else the kind is left out."""
    import datasets
    from lm_eval.tasks.hellaswag.utils import process_docs

    texts = {}
    piqa = piqa_docs() if "PIQA-length" in kinds else None
    if piqa is not None:
        texts["PIQA-length"] = [f"Question: {d['goal']}\nAnswer: {(d['sol1'], d['sol2'])[d['label']]}"
                                for d in piqa[docs]]
    hellaswag = hellaswag_docs() if "HellaSwag-length" in kinds else None
    if hellaswag is not None:
        processed = process_docs(datasets.Dataset.from_list(hellaswag[docs]))
        texts["HellaSwag-length"] = [f"{d['query']} {d['choices'][int(d['label'])]}" for d in processed]
    for shipped, folder in SHIPPED_TASK_DOCS:
        if shipped.start <= docs.start and docs.stop is not None and docs.stop <= shipped.stop:
            rows = slice(docs.start - shipped.start, docs.stop - shipped.start)
            for kind in [k for k in kinds if k not in texts]:
                log.info("%s: no local data, documents %d-%d as shipped with aura-tl", kind, docs.start,
                         docs.stop - 1)
                texts[kind] = shipped_texts(folder, TASK_SETS[kind])[rows]
    return {kind: texts[kind] for kind in kinds if kind in texts}


def paradetox_path() -> Path | None:
    """The local ParaDetox TSV (`$AURA_TL_PARADETOX`, else the shared data folder), or None."""
    return local_data_path(None, "AURA_TL_PARADETOX", "paradetox/paradetox.tsv", name="paradetox_path")


def davidson_path() -> Path | None:
    """The local Davidson et al. (2017) labelled tweets (`$AURA_TL_DAVIDSON`, else the shared data folder), or None."""
    return local_data_path(None, "AURA_TL_DAVIDSON", "davidson/labeled_data.csv", name="davidson_path")


def near_toxic_texts(texts: slice, kinds: tuple[str, ...] = NEAR_TOXIC) -> dict[str, list[str]]:
    """The texts `texts` (in file order) of each near-toxic kind of `kinds`: ParaDetox's first non-empty non-toxic
    rewrite of each pair, Davidson tweets of class 2 ("neither"); a kind without local data is left out."""
    readers = {NEAR_TOXIC[0]: (paradetox_path, lambda path: [neutral for _, neutral in read_paradetox_pairs(path)]),
               NEAR_TOXIC[1]: (davidson_path, read_davidson_neither)}
    found = {}
    for kind in kinds:
        locate, read = readers[kind]
        path = locate()
        if path is not None:
            found[kind] = read(path)[texts]
    return found


def nontoxic_prompts(split: str, n: int) -> list[str]:
    """The first `n` non-toxic RTP prompts of `split` (`prompt_records`: local records, else the shipped `learn`
    prompts; for `calibrate`, else its shipped non-toxic prompts); [] when there are none."""
    try:
        records = prompt_records(split)
    except FileNotFoundError:
        return shipped_calibration("rtp-calibrate-nontoxic")[:n] if split == CALIBRATION_SLICES.prompt_split else []
    return [prompt_text(r) for r in records if not prompt_is_toxic(r)][:n]


def own_continuations(model, prompts: list[str], tokens: int = CONTINUATION_TOKENS) -> list[str]:
    """Each prompt followed by the unsteered model's greedy continuation (call it without an edit applied)."""
    continued = generate(model, prompts, SamplingConfig(max_new_tokens=tokens, do_sample=False), batch_size=32)
    return [p + c for p, c in zip(prompts, continued)]


def text_rows(model, text: str, tokens: int = PANEL_TOKENS) -> dict[str, list[list[int]]]:
    """The kinds read from one text (`tokens` of each): long windows from BOS, and its paragraphs each alone."""
    return {"long windows": window_rows(model, text, tokens),
            "short paragraphs": short_rows(model, paragraphs(text, max_tokens=tokens, tokenizer=hf_tokenizer(model)))}


def wikitext_text(docs: slice) -> str | None:
    """WikiText-2 test documents `docs` joined, or None when WikiText is not local."""
    found = wikitext_slice(docs)
    return None if found is None else "\n\n".join(found)


def panel_rows(model, text: str, slices: PanelSlices, *, text_tokens: int = PANEL_TOKENS,
               tokens: int | None = PANEL_TOKENS, prompts: int | None = None,
               continuation_tokens: int = CONTINUATION_TOKENS, near_toxic: bool = False
               ) -> dict[str, list[list[int]]]:
    """Every kind of the panel as token rows, in `PANEL` order: `text`'s long windows and paragraphs (`text_tokens`
    of each), then the task texts of `slices` and the own continuations of its split's first `prompts` non-toxic
    prompts (`nontoxic_prompts`), up to `tokens` tokens of each kind (None: all; the own
    continuations are all `prompts` of them when it is given); with `near_toxic`, then the `NEAR_TOXIC` texts of
    `slices.near_texts`."""
    rows = text_rows(model, text, text_tokens)
    texts = task_texts(slices.task_docs)
    # an RTP prompt is ~8-20 tokens: prompts enough for `tokens` with few left over
    wanted = prompts if prompts is not None else (tokens or PANEL_TOKENS) // (continuation_tokens + 8)
    chosen = nontoxic_prompts(slices.prompt_split, wanted)
    if chosen:
        texts["own continuations"] = own_continuations(model, chosen, continuation_tokens)
    kinds = PANEL + (NEAR_TOXIC if near_toxic else ())
    if near_toxic:
        texts.update(near_toxic_texts(slices.near_texts))
    caps = {name: tokens for name in texts} | ({"own continuations": None} if prompts is not None else {})
    rows.update({name: short_rows(model, items, caps[name]) for name, items in texts.items()})
    missing = [name for name in kinds if not rows.get(name)]
    if missing:
        log.warning("the retention panel leaves out %s: no local data (see aura_tl.retention)", ", ".join(missing))
    return {name: rows[name] for name in kinds if rows.get(name)}
