"""The retention panel (`aura_tl.retention`): every kind of text, read on calibration's slices or the report's,
which never meet; and calibration keeps its budget on each kind."""

from __future__ import annotations

import pytest

from aura_tl import retention
from aura_tl.data import rtp_records
from aura_tl.models import hf_tokenizer
from aura_tl.retention import (CALIBRATION_OWN_PROMPTS, CALIBRATION_SLICES, PANEL, panel_rows, report_slices,
                               task_texts)
from aura_tl.splits import prompt_text

TEXT = "\n".join(f"The river {i} runs past the old mill and the stone bridge into the town." for i in range(12))


def test_calibration_and_the_report_read_different_task_documents_and_prompts(shared_data):
    calibration = task_texts(CALIBRATION_SLICES.task_docs)
    report = task_texts(report_slices(1000).task_docs)
    assert set(calibration) == set(report) == {"PIQA-length", "HellaSwag-length"}
    assert len(calibration["PIQA-length"]) == 1838 - 1500 and len(report["PIQA-length"]) == 1000
    for kind in calibration:
        assert not set(calibration[kind]) & set(report[kind])
    assert report["PIQA-length"][0].startswith("Question: ") and "\nAnswer: " in report["PIQA-length"][0]
    eval_prompts = {prompt_text(r) for r in rtp_records(split="eval")}
    chosen = retention.nontoxic_prompts(CALIBRATION_SLICES.prompt_split, 50)
    assert len(chosen) == 50 and not set(chosen) & eval_prompts
    with pytest.raises(ValueError, match="at most 1000"):
        report_slices(1001)


def test_gates_neutral_task_text_is_read_by_neither_the_report_nor_calibration(shared_data):
    from aura_tl.neutral_text import neutral_texts

    gate = neutral_texts(None, "piqa:500,hellaswag:500")
    assert len(gate) == 1000
    piqa, hellaswag = gate[:500], gate[500:]
    assert all(t.startswith("Question: ") for t in piqa) and not any(t.startswith("Question: ") for t in hellaswag)
    report, calibration = task_texts(report_slices(1000).task_docs), task_texts(CALIBRATION_SLICES.task_docs)
    for kind, texts in (("PIQA-length", piqa), ("HellaSwag-length", hellaswag)):
        assert not set(texts) & (set(report[kind]) | set(calibration[kind]))
    assert neutral_texts(None, "piqa:2") == piqa[:2]  # the first documents after the report's
    with pytest.raises(ValueError, match="at most 500"):
        neutral_texts(None, "hellaswag:501")


def test_gates_neutral_continuations_continue_learn_prompts_greedily(tiny, shared_data):
    from aura_tl.neutral_text import neutral_texts

    texts = neutral_texts(tiny, "continued:2")
    prompts = retention.nontoxic_prompts("learn", 2)
    assert len(texts) == 2 and all(t.startswith(p) and len(t) > len(p) for t, p in zip(texts, prompts))
    assert not set(prompts) & {prompt_text(r) for r in rtp_records(split="eval")}
    # greedy by hand: the argmax of the model's next-token logits, one token at a time after the prompt's tokens
    import torch

    tokenizer = hf_tokenizer(tiny)
    ids = tokenizer(prompts[0], add_special_tokens=True)["input_ids"]
    new = []
    with torch.inference_mode():
        for _ in range(retention.CONTINUATION_TOKENS):
            token = int(tiny(torch.tensor([ids + new]))[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    assert texts[0] == prompts[0] + tokenizer.decode(new, skip_special_tokens=True)


def test_gates_paradetox_rewrites_come_after_the_held_out_ones(shared_data):
    import csv

    from aura_tl.neutral_text import neutral_texts
    from aura_tl.retention import GATE_NEAR_TEXTS_START

    with open(shared_data / "paradetox" / "paradetox.tsv", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t")
                if r["toxic"].strip() and any((r.get(c) or "").strip() for c in ("neutral1", "neutral2", "neutral3"))]
    first = [next(r[c] for c in ("neutral1", "neutral2", "neutral3") if (r.get(c) or "").strip()) for r in rows]
    assert neutral_texts(None, "paradetox:3") == first[GATE_NEAR_TEXTS_START:GATE_NEAR_TEXTS_START + 3]


def test_near_toxic_texts_of_the_report_calibration_and_gates_never_meet(shared_data):
    """The report's held-out check reads the first texts of each near-toxic kind, calibration's `near` panel the next
    500, gates' `paradetox:N` from 1000 on."""
    from aura_tl.neutral_text import neutral_texts
    from aura_tl.retention import CALIBRATION_NEAR_TEXTS, NEAR_TOXIC, near_toxic_texts

    report = near_toxic_texts(report_slices(10, 500).near_texts)
    calibration = near_toxic_texts(CALIBRATION_NEAR_TEXTS)
    assert list(report) == list(calibration) == list(NEAR_TOXIC)
    assert all(len(report[k]) == 500 and len(calibration[k]) == 500 for k in NEAR_TOXIC)
    everything = near_toxic_texts(slice(0, 1000))
    for kind in NEAR_TOXIC:
        assert everything[kind] == report[kind] + calibration[kind]
    gates = near_toxic_texts(slice(1000, 1005))
    assert neutral_texts(None, "paradetox:5") == gates[NEAR_TOXIC[0]]
    assert neutral_texts(None, "davidson:5") == gates[NEAR_TOXIC[1]]
    with pytest.raises(ValueError, match="at most 500 near-toxic"):
        report_slices(10, 501)


def test_calibration_panel_has_every_kind_within_its_token_budget(tiny, shared_data):
    rows = panel_rows(tiny, TEXT, CALIBRATION_SLICES, text_tokens=300, tokens=120, prompts=4, continuation_tokens=5)
    assert list(rows) == list(PANEL)
    for kind in PANEL[2:]:  # up to the budget: the last row may pass it, the one before does not
        assert sum(len(r) for r in rows[kind][:-1]) < 120
    assert len(rows["own continuations"]) <= 4
    assert all(0 < len(r) < tiny.cfg.n_ctx for kind in rows.values() for r in kind)
    tokenizer = hf_tokenizer(tiny)
    first = tokenizer.decode(rows["own continuations"][0])
    assert first.startswith(retention.nontoxic_prompts("calibrate", 1)[0])


def test_given_prompts_count_own_continuations_whatever_the_token_cap(tiny, shared_data):
    rows = panel_rows(tiny, TEXT, CALIBRATION_SLICES, text_tokens=100, tokens=30, prompts=6, continuation_tokens=4)
    assert len(rows["own continuations"]) == 6 and sum(len(r) for r in rows["own continuations"]) > 30
    assert sum(len(r) for r in rows["PIQA-length"][:-1]) < 30  # the other kinds keep the cap
    capped = panel_rows(tiny, TEXT, CALIBRATION_SLICES, text_tokens=100, tokens=30, continuation_tokens=4)
    assert sum(len(r) for r in capped["own continuations"][:-1]) < 30


def without_local_data(monkeypatch) -> None:
    """As a fresh install: no data folder, no data variables."""
    from aura_tl import paths

    for variable in ("AURA_TL_WIKITEXT", "AURA_TL_PIQA", "AURA_TL_HELLASWAG", "AURA_TL_RTP", "AURA_TL_PARADETOX",
                     "AURA_TL_DAVIDSON", "AURA_SHARED_DATA"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(paths, "shared_data_dir", lambda: None)


def test_shipped_calibration_texts_are_the_local_ones(shared_data, monkeypatch):
    """Calibration's PIQA / HellaSwag texts and `calibrate` prompts read the same with the data folder and without
    it (from the package: rebuild with bench/bundle_concept_data.py); the report's slices are local data only."""
    from aura_tl.calibrate import SHIPPED_WIKITEXT_DOCS, shipped_calibration, wikitext_slice

    local_tasks = task_texts(CALIBRATION_SLICES.task_docs)
    local_prompts = retention.nontoxic_prompts(CALIBRATION_SLICES.prompt_split, 1000)
    assert len(local_prompts) == 140 and shipped_calibration("wikitext") == wikitext_slice(SHIPPED_WIKITEXT_DOCS)
    without_local_data(monkeypatch)
    assert task_texts(CALIBRATION_SLICES.task_docs) == local_tasks
    assert task_texts(slice(1600, 1610), ("HellaSwag-length",)) == {
        "HellaSwag-length": local_tasks["HellaSwag-length"][100:110]}
    assert retention.nontoxic_prompts(CALIBRATION_SLICES.prompt_split, 128) == local_prompts[:128]
    assert task_texts(report_slices(100).task_docs) == {}  # the report's documents never ship
    assert task_texts(slice(1400, 1600)) == {}  # nor a range only partly shipped
    assert retention.nontoxic_prompts(report_slices(100).prompt_split, 5) == []


def test_a_fresh_install_calibrates_on_the_same_panel(tiny, shared_data, monkeypatch):
    """`calibration_panel=full` and `text` read the same token rows of every kind with the data folder and without it:
    the shipped start of calibration's WikiText slice holds all that calibration reads of it."""
    from aura_tl.calibrate import calibration_text
    from aura_tl.retention import text_rows

    def panel():
        text, source = calibration_text()
        full = panel_rows(tiny, text, CALIBRATION_SLICES, prompts=CALIBRATION_OWN_PROMPTS)
        return source, text_rows(tiny, text), full

    local_source, local_text, local_full = panel()
    without_local_data(monkeypatch)
    source, text, full = panel()
    assert "shipped" in source and "shipped" not in local_source
    assert list(full) == list(PANEL) and len(full["own continuations"]) == CALIBRATION_OWN_PROMPTS
    assert text == local_text and full == local_full
    kept = panel_rows(tiny, TEXT, report_slices(10), tokens=60, prompts=2, continuation_tokens=3)
    assert list(kept) == ["long windows", "short paragraphs"]  # the report's slices: nothing local, left out