"""Write the concept sets that ship inside the package (`aura_tl/concept_sets/`), from the shared data folder.

    python bench/bundle_concept_data.py                       # rtp-learn from ../shared/data/rtp (learn split)
    python bench/bundle_concept_data.py --onpolicy out/onpolicy_learn.jsonl   # + smollm2-onpolicy

`rtp-learn`: every prompt and continuation sentence of the `learn` split (aura_tl.splits) of the shared
RealToxicityPrompts records, labelled toxic when its Perspective toxicity >= 0.5 (the `rtp` layout's rule).
`prompt_sets/rtp-learn`: the same split's prompts, {"prompt": {"text", "toxicity"}} per record in file order, which
`onpolicy:N` and `continued:N` continue when no RTP records are local (`aura_tl.data.prompt_records`).
`neutral_sets/{wikitext,piqa,hellaswag}`: the first `SHIPPED_TEXTS` texts of the gates' document-like neutral
sources as the local data gives them (`aura_tl.neutral_text`), {"text"} per row.
`calibration_sets/`: calibration's texts (`aura_tl.calibrate`, `aura_tl.retention`): the start of its WikiText-2
slice (documents `SHIPPED_WIKITEXT_DOCS`), the PIQA- and HellaSwag-length texts of `CALIBRATION_TASK_DOCS`, and the
`calibrate` split's non-toxic prompts, {"text"} per row, so `calibration_panel` reads the same without the data.
`smollm2-onpolicy`: the continuations SmolLM2-135M-Instruct sampled for learn-split prompts (`aura-tl onpolicy`),
labelled by the offline scorer; text and label only (no RTP prompt text). Both are gzipped `text,label` JSONL,
written byte-for-byte reproducibly (fixed gzip mtime), so rebuilding shows no diff.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

from aura_tl.data import BUNDLED_DIR, BUNDLED_LEARN_PROMPTS, _rows_rtp, read_jsonl, rtp_records
from aura_tl.splits import prompt_is_toxic, prompt_text


def write_rows(path: Path, rows: list[dict]) -> Path:
    """`rows` as gzipped JSONL, byte-for-byte reproducible (fixed mtime)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=9) as handle:
        for row in rows:
            handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def write_set(name: str, texts: list[str], labels: list[int]) -> Path:
    path = write_rows(BUNDLED_DIR / f"{name}.jsonl.gz",
                      [{"text": text, "label": int(label)} for text, label in zip(texts, labels)])
    print(f"{path}: {len(texts)} sentences, {sum(labels)} toxic, {path.stat().st_size / 1024:.1f} KiB")
    return path


def write_neutral_sets() -> None:
    from aura_tl.neutral_text import SHIPPED_DIR, SHIPPED_SOURCES, SHIPPED_TEXTS, neutral_texts

    for name in SHIPPED_SOURCES:
        texts = neutral_texts(None, f"{name}:{SHIPPED_TEXTS}")  # the local data's (checked: all of them)
        if len(texts) != SHIPPED_TEXTS:
            raise SystemExit(f"{name}: the local data gave {len(texts)} texts, not {SHIPPED_TEXTS}")
        path = write_rows(SHIPPED_DIR / f"{name}.jsonl.gz", [{"text": text} for text in texts])
        print(f"{path}: {len(texts)} texts, {path.stat().st_size / 1024:.1f} KiB")


def write_calibration_sets() -> None:
    from aura_tl.calibrate import SHIPPED_CALIBRATION_DIR, SHIPPED_WIKITEXT_DOCS, wikitext_slice
    from aura_tl.retention import CALIBRATION_SLICES, TASK_SETS, hellaswag_docs, piqa_docs, task_texts

    if piqa_docs() is None or hellaswag_docs() is None:  # task_texts would read the shipped ones
        raise SystemExit("PIQA / HellaSwag: not in the local data")
    local = task_texts(CALIBRATION_SLICES.task_docs)
    sets = {"wikitext": wikitext_slice(SHIPPED_WIKITEXT_DOCS),
            **{TASK_SETS[kind]: local.get(kind) for kind in TASK_SETS},
            "rtp-calibrate-nontoxic": [prompt_text(r) for r in rtp_records(split=CALIBRATION_SLICES.prompt_split)
                                       if not prompt_is_toxic(r)]}
    for name, texts in sets.items():
        if not texts:
            raise SystemExit(f"{name}: not in the local data")
        path = write_rows(SHIPPED_CALIBRATION_DIR / f"{name}.jsonl.gz", [{"text": text} for text in texts])
        print(f"{path}: {len(texts)} texts, {path.stat().st_size / 1024:.1f} KiB")


def write_learn_prompts(records: list[dict]) -> Path:
    rows = [{"prompt": {"text": prompt_text(r), "toxicity": r["prompt"].get("toxicity")}} for r in records]
    path = write_rows(BUNDLED_LEARN_PROMPTS, rows)
    toxic = sum(prompt_is_toxic(r) for r in rows)
    print(f"{path}: {len(rows)} prompts, {toxic} toxic, {path.stat().st_size / 1024:.1f} KiB")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onpolicy", default=None, help="an `aura-tl onpolicy` JSONL to bundle as smollm2-onpolicy")
    args = parser.parse_args()
    import pandas as pd

    learn = rtp_records(split="learn")
    texts, labels = _rows_rtp(pd.DataFrame(learn))
    write_set("rtp-learn", texts, labels)
    write_learn_prompts(learn)
    write_neutral_sets()
    write_calibration_sets()
    if args.onpolicy:
        rows = [r for r in read_jsonl(args.onpolicy) if r["text"].strip()]
        write_set("smollm2-onpolicy", [r["text"] for r in rows], [r["label"] for r in rows])


if __name__ == "__main__":
    main()
