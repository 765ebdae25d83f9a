import pandas as pd
import pytest

from aura_tl.data import load_concept_data


def test_jigsaw_drops_ambiguous_non_toxic_rows(shared_data):
    path = shared_data / "jigsaw" / "train_sample.csv"
    raw = pd.read_csv(path)
    others = raw[["severe_toxic", "obscene", "threat", "insult", "identity_hate"]].sum(axis=1) > 0
    expected_neg = int(((raw.toxic == 0) & ~others).sum())
    data = load_concept_data(path, balance=False)
    assert data.layout == "jigsaw"
    assert data.counts == {1: int(raw.toxic.sum()), 0: expected_neg}


def test_balanced_seeded_sampling_with_cap(shared_data):
    path = shared_data / "davidson" / "labeled_data.csv"
    a = load_concept_data(path, max_per_class=50, seed=3)
    b = load_concept_data(path, max_per_class=50, seed=3)
    c = load_concept_data(path, max_per_class=50, seed=4)
    assert a.layout == "davidson" and a.counts == {0: 50, 1: 50}
    assert a.texts == b.texts and a.texts != c.texts


def test_rtp_and_paradetox_layouts(shared_data):
    rtp = load_concept_data(shared_data / "rtp" / "decodingtrust_toxic.jsonl", balance=False)
    assert rtp.layout == "rtp" and rtp.counts[1] > 0 and rtp.counts[0] > 0  # continuations are often clean
    para = load_concept_data(shared_data / "paradetox" / "paradetox.tsv", max_per_class=100)
    assert para.layout == "paradetox" and para.counts == {0: 100, 1: 100}


def test_text_label_file_and_errors(tmp_path):
    good = tmp_path / "d.csv"
    good.write_text("text,label\nyou suck,1\nnice day,0\nlovely,0\n")
    data = load_concept_data(good)
    assert data.counts == {0: 1, 1: 1}
    assert dict(zip(data.texts, data.labels))["you suck"] == 1
    one = tmp_path / "one.csv"
    one.write_text("text,label\na,1\nb,1\n")
    with pytest.raises(ValueError, match="only one class"):
        load_concept_data(one)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(ValueError, match="no rows"):
        load_concept_data(empty)
    odd = tmp_path / "odd.csv"
    odd.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="layout"):
        load_concept_data(odd)
    with pytest.raises(FileNotFoundError):
        load_concept_data(tmp_path / "missing.csv")


def test_embedded_set_is_balanced_and_paired():
    data = load_concept_data("embedded", balance=False)
    assert data.counts == {0: 520, 1: 520}
    assert len(set(data.texts)) == len(data.texts)


def test_bundled_rtp_learn_is_the_learn_split(shared_data):
    """The shipped set is exactly what `rtp:learn` reads from the local records (rebuild: bench/bundle_concept_data.py)."""
    from aura_tl.data import bundled_sets, load_concept_data

    assert "rtp-learn" in bundled_sets()
    shipped, local = load_concept_data("rtp-learn"), load_concept_data("rtp:learn")
    assert shipped.texts == local.texts and shipped.labels == local.labels and shipped.counts[1] == 398


def test_shipped_learn_prompts_are_the_learn_split(shared_data):
    """The shipped prompts are the local learn split's, text and toxicity (rebuild: bench/bundle_concept_data.py)."""
    from aura_tl.data import bundled_learn_records, rtp_records
    from aura_tl.splits import prompt_is_toxic, prompt_text

    shipped, local = bundled_learn_records(), rtp_records(split="learn")
    assert [prompt_text(r) for r in shipped] == [prompt_text(r) for r in local]
    assert [r["prompt"]["toxicity"] for r in shipped] == pytest.approx([r["prompt"]["toxicity"] for r in local])
    assert sum(map(prompt_is_toxic, shipped)) == 198


def test_without_local_rtp_only_learn_prompts_come_from_the_package(monkeypatch, tmp_path):
    """A fresh install (no RTP records anywhere) continues the shipped learn prompts; other splits are an error,
    and the gate's continued prompts are its non-toxic ones; of the others only calibration's non-toxic prompts
    ship (tests/test_retention.py), never `eval`'s."""
    from aura_tl import paths, retention
    from aura_tl.data import bundled_learn_records, prompt_records
    from aura_tl.splits import prompt_is_toxic, prompt_text

    monkeypatch.delenv("AURA_TL_RTP", raising=False)
    monkeypatch.setattr(paths, "shared_data_dir", lambda: None)
    assert prompt_records("learn") == bundled_learn_records()
    with pytest.raises(FileNotFoundError, match="'eval' split"):
        prompt_records("eval")
    clean = [prompt_text(r) for r in bundled_learn_records() if not prompt_is_toxic(r)]
    assert retention.nontoxic_prompts("learn", 5) == clean[:5] and len(clean) == 282
    assert retention.nontoxic_prompts("eval", 5) == [] and len(retention.nontoxic_prompts("calibrate", 5)) == 5
    monkeypatch.setenv("AURA_TL_RTP", str(tmp_path / "missing.jsonl"))  # a path given but wrong is never replaced
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        prompt_records("learn")


def test_shipped_neutral_texts_are_the_local_ones(shared_data, monkeypatch):
    """wikitext:N, piqa:N and hellaswag:N read the same texts with the data folder and without it (from the
    package: rebuild with bench/bundle_concept_data.py); more than shipped gives what is shipped, with a warning."""
    from aura_tl import paths
    from aura_tl.neutral_text import SHIPPED_SOURCES, SHIPPED_TEXTS, neutral_texts

    local = {name: neutral_texts(None, f"{name}:{SHIPPED_TEXTS}") for name in SHIPPED_SOURCES}
    assert all(len(texts) == SHIPPED_TEXTS for texts in local.values())
    for variable in ("AURA_TL_WIKITEXT", "AURA_TL_PIQA", "AURA_TL_HELLASWAG", "AURA_SHARED_DATA"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(paths, "shared_data_dir", lambda: None)
    for name, texts in local.items():
        assert neutral_texts(None, f"{name}:300") == texts[:300]
    assert neutral_texts(None, "piqa:250,hellaswag:250") == local["piqa"][:250] + local["hellaswag"][:250]
    assert neutral_texts(None, "wikitext:600") == local["wikitext"]
