"""The learn / calibrate / eval split of RTP prompts: disjoint, complete, stratified, and independent of order."""

import random
import subprocess
import sys

from aura_tl.data import load_concept_data, rtp_records
from aura_tl.splits import SPLITS, assign_splits, select_split


def test_splits_are_disjoint_complete_and_stratified(shared_data):
    records = rtp_records(shared_data / "rtp")
    parts = assign_splits(records)
    texts = {name: {r["prompt"]["text"] for r in rows} for name, rows in parts.items()}
    assert sum(len(rows) for rows in parts.values()) == len(records) == 1198
    overall = sum(r["prompt"]["toxicity"] >= 0.5 for r in records) / len(records)
    names = list(SPLITS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not texts[a] & texts[b]
    for name, rows in parts.items():
        share = len(rows) / len(records)
        toxic = sum(r["prompt"]["toxicity"] >= 0.5 for r in rows) / len(rows)
        assert abs(share - SPLITS[name]) < 0.01 and abs(toxic - overall) < 0.01


def test_split_ignores_file_order_and_process(shared_data):
    records = rtp_records(shared_data / "rtp")
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    same = {r["prompt"]["text"] for r in select_split(shuffled, "eval")}
    assert same == {r["prompt"]["text"] for r in select_split(records, "eval")}
    code = ("from aura_tl.data import rtp_records; from aura_tl.splits import select_split; "
            f"print(sorted(r['prompt']['text'] for r in select_split(rtp_records(r'{shared_data / 'rtp'}'), 'eval'))[:3])")
    other_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other_process.stdout.strip() == str(sorted(same)[:3])


def test_concept_data_from_the_learn_split_only(shared_data, monkeypatch):
    monkeypatch.setenv("AURA_TL_RTP", str(shared_data / "rtp"))
    data = load_concept_data("rtp:learn")
    learn = select_split(rtp_records(), "learn")
    allowed = {r[p]["text"].strip() for r in learn for p in ("prompt", "continuation")}
    assert data.texts and set(data.texts) <= allowed and data.info["split"] == "learn"
    evaluated = {r["prompt"]["text"].strip() for r in select_split(rtp_records(), "eval")}
    assert not set(data.texts) & evaluated
