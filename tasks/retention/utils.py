"""Offline twins of lm-eval's `piqa`, `hellaswag` and `wikitext`: the same prompts and metrics, data from local files.

Paths, first found: `--metadata '{"piqa_path": ...}'` (`hellaswag_path`, `wikitext_path`), the environment
(`AURA_TL_PIQA`, `AURA_TL_HELLASWAG`, `AURA_TL_WIKITEXT`), or the shared data folder (`$AURA_SHARED_DATA`).
PIQA: JSONL with goal, sol1, sol2, label. HellaSwag: the Hugging Face JSONL layout. WikiText: the raw test text,
split into documents at ` = Title = ` headings.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from lm_eval.tasks.hellaswag.utils import process_docs as hellaswag_process_docs  # noqa: F401  (used by the YAML)
from lm_eval.tasks.wikitext.preprocess_wikitext import process_results as wikitext_process_results  # noqa: F401
from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer  # noqa: F401

from aura_tl.calibrate import wikitext_documents
from aura_tl.data import read_jsonl
from aura_tl.paths import local_data_path


def _require(path: Path | None, what: str, key: str, env: str) -> Path:
    if path is None:
        raise FileNotFoundError(f"{what}: no local data; pass --metadata '{{\"{key}\": \"/path\"}}' or set {env}")
    return path


def _split(rows: list[dict], name: str = "validation") -> datasets.DatasetDict:
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows)})


def load_piqa(piqa_path: str | None = None, **_) -> datasets.DatasetDict:
    path = _require(local_data_path(piqa_path, "AURA_TL_PIQA", "piqa/validation_merged.jsonl", name="piqa_path"),
                    "piqa_local", "piqa_path", "AURA_TL_PIQA")
    rows = [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(r["label"])}
            for r in read_jsonl(path)]
    return _split(rows)


def load_hellaswag(hellaswag_path: str | None = None, **_) -> datasets.DatasetDict:
    path = _require(local_data_path(hellaswag_path, "AURA_TL_HELLASWAG", "hellaswag/validation.jsonl", name="hellaswag_path"),
                    "hellaswag_local", "hellaswag_path", "AURA_TL_HELLASWAG")
    keep = ("ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type", "label")
    return _split([{k: r[k] for k in keep if k in r} for r in read_jsonl(path)])


split_wikitext = wikitext_documents  # one definition, in the library (calibration reads it too)


def load_wikitext(wikitext_path: str | None = None, **_) -> datasets.DatasetDict:
    path = _require(local_data_path(wikitext_path, "AURA_TL_WIKITEXT", "wikitext2/wiki.test.raw", name="wikitext_path"),
                    "wikitext_local", "wikitext_path", "AURA_TL_WIKITEXT")
    pages = split_wikitext(path.read_text(encoding="utf-8"))
    return _split([{"page": p} for p in pages], "test")
