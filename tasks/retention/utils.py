"""Offline twins of lm-eval's `piqa`, `hellaswag` and `wikitext`: the same prompts and metrics, data from local files.

Paths, first found: `--metadata '{"piqa_path": ...}'` (`hellaswag_path`, `wikitext_path`), the environment
(`AURA_TL_PIQA`, `AURA_TL_HELLASWAG`, `AURA_TL_WIKITEXT`), or the shared data folder (`$AURA_SHARED_DATA`).
PIQA: JSONL with goal, sol1, sol2, label. HellaSwag: the Hugging Face JSONL layout. WikiText: the raw test text,
split into documents at ` = Title = ` headings.
"""

from __future__ import annotations

import datasets
from lm_eval.tasks.hellaswag.utils import process_docs as hellaswag_process_docs  # noqa: F401  (used by the YAML)
from lm_eval.tasks.wikitext.preprocess_wikitext import process_results as wikitext_process_results  # noqa: F401
from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer  # noqa: F401

from aura_tl.calibrate import wikitext_documents
from aura_tl.paths import local_data_path
from aura_tl.retention import hellaswag_docs, piqa_docs


def _require(found, what: str, key: str, env: str):
    if found is None:
        raise FileNotFoundError(f"{what}: no local data; pass --metadata '{{\"{key}\": \"/path\"}}' or set {env}")
    return found


def _split(rows: list[dict], name: str = "validation") -> datasets.DatasetDict:
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows)})


def load_piqa(piqa_path: str | None = None, **_) -> datasets.DatasetDict:
    return _split(_require(piqa_docs(piqa_path), "piqa_local", "piqa_path", "AURA_TL_PIQA"))


def load_hellaswag(hellaswag_path: str | None = None, **_) -> datasets.DatasetDict:
    return _split(_require(hellaswag_docs(hellaswag_path), "hellaswag_local", "hellaswag_path", "AURA_TL_HELLASWAG"))


split_wikitext = wikitext_documents  # one definition, in the library (calibration reads it too)


def load_wikitext(wikitext_path: str | None = None, **_) -> datasets.DatasetDict:
    path = _require(local_data_path(wikitext_path, "AURA_TL_WIKITEXT", "wikitext2/wiki.test.raw", name="wikitext_path"),
                    "wikitext_local", "wikitext_path", "AURA_TL_WIKITEXT")
    pages = split_wikitext(path.read_text(encoding="utf-8"))
    return _split([{"page": p} for p in pages], "test")
