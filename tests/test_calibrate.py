"""Calibration of the strength to a perplexity budget (tiny model, a small text file)."""

import pytest

from aura_tl.calibrate import (_perplexity_from_bos, bisect_strength, paragraph_perplexity, paragraphs, perplexity,
                               short_rows, wikitext_documents)
from aura_tl.data import ConceptData
from aura_tl.learn import learn_intervention
from aura_tl.retention import (CALIBRATION_NEAR_TEXTS, CALIBRATION_OWN_PROMPTS, CALIBRATION_SLICES, NEAR_TOXIC, PANEL,
                               PANEL_TOKENS, near_toxic_texts, task_texts)

# the probe gate on every block: a Linear-AcT learned in seconds, for tests of calibration itself
PROBE_EVERY_BLOCK = {"gate": "probe", "hooks": "hook_attn_out"}

TEXT = ("The committee met on Tuesday to discuss the new library. Members agreed that the reading room needs more "
        "light, and the budget for books will grow next year. ") * 6


def test_perplexity_matches_the_mean_token_loss(tiny):
    """By hand: one window = BOS + the text's first 63 tokens; TransformerLens' own mean loss over it."""
    import math

    import torch

    from aura_tl.models import hf_tokenizer

    tokenizer = hf_tokenizer(tiny)
    ids = [tokenizer.bos_token_id] + tokenizer(TEXT, add_special_tokens=False)["input_ids"][:63]
    loss = tiny(torch.tensor([ids]), return_type="loss")
    assert perplexity(tiny, TEXT, window=64, max_tokens=63) == pytest.approx(math.exp(float(loss)), rel=1e-5)
    # two windows, each from BOS: the pooled loss of both, by hand
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"][:100]
    total = sum(float(tiny(torch.tensor([[tokenizer.bos_token_id] + part]), return_type="loss")) * len(part)
                for part in (ids[:63], ids[63:]))
    assert perplexity(tiny, TEXT, window=64, max_tokens=100) == pytest.approx(math.exp(total / 100), rel=1e-5)


def test_word_perplexity_divides_the_same_loss_by_the_words(tiny):
    import math

    import torch

    from aura_tl.models import hf_tokenizer

    tokenizer = hf_tokenizer(tiny)
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"][:63]
    total = float(tiny(torch.tensor([[tokenizer.bos_token_id] + ids]), return_type="loss")) * len(ids)
    words = len(tokenizer.decode(ids).split())  # by hand: the words of every scored token
    assert 0 < words < len(ids)
    assert perplexity(tiny, TEXT, window=64, max_tokens=63, unit="word") == pytest.approx(math.exp(total / words),
                                                                                         rel=1e-5)
    with pytest.raises(ValueError, match="unit"):
        perplexity(tiny, TEXT, unit="byte")


def test_bisection_searches_below_a_strength_above_one():
    def ppl(strength):  # by hand: 10 (1 + 0.01 x^2) = 11 at x = sqrt(10) = 3.162...
        return 10 * (1 + 0.01 * strength ** 2)

    strength, record = bisect_strength(ppl, 10.0, steps=8, upper=4.0)
    assert strength <= 10 ** 0.5 < strength + 4 / 2 ** 8 + 1e-12 and record["points"][-1][0] == 4.0
    assert bisect_strength(ppl, 10.0, upper=3.0)[0] == 3.0  # the learned strength already fits
    with pytest.raises(ValueError, match="above 0"):
        bisect_strength(ppl, 10.0, upper=0.0)


def test_bisection_respects_the_budget_to_its_resolution():
    calls = []

    def ppl(strength):  # by hand: 10 at lambda 0, +40 % at lambda 1, growing with lambda^2
        calls.append(strength)
        return 10 * (1 + 0.4 * strength ** 2)

    strength, record = bisect_strength(ppl, 10.0, steps=6)
    exact = 0.5  # 10 (1 + 0.4 x^2) = 11 at x = 0.5
    assert strength <= exact < strength + 1 / 2 ** 6 + 1e-12 and ppl(strength) <= 11
    assert record["budget_ppl"] == pytest.approx(11.0) and record["monotone"] and len(calls) == 8 + 1
    assert bisect_strength(ppl, 50.0)[0] == 1.0  # the full strength already fits
    assert bisect_strength(lambda s: 10.0 + s, 0.0, steps=3)[0] == 0.0
    with pytest.raises(ValueError, match="max_ppl_increase"):
        bisect_strength(ppl, -1)


def test_non_monotone_perplexity_is_reported():
    _, record = bisect_strength(lambda s: {0.0: 10.0, 1.0: 13.0, 0.5: 14.0, 0.25: 12.0}.get(s, 11.0), 15.0, steps=2)
    assert record["monotone"] is False


def test_learn_with_a_budget_on_the_real_model(smol, tmp_path):
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    data = ConceptData([f"you stupid idiot {i}, shut up" for i in range(16)] +
                       [f"thank you kindly {i}" for i in range(16)], [1] * 16 + [0] * 16, "test", "text_label")
    iv = learn_intervention(smol, data, "linact", hooks="blocks.1*.hook_attn_out", gate="probe", max_ppl_increase=1.0,
                            calibration_text=str(text), calibration_panel="text", progress=False)
    record = iv.metadata["calibration"]
    assert iv.strength == record["chosen_strength"] and record["text"] == str(text)
    assert record["unit"] == "word" and record["budget_ratio"] == pytest.approx(1.01)
    assert set(record["chosen_ppl"]) == {"long windows", "short paragraphs"}
    for name, ppl in record["chosen_ppl"].items():  # the budget holds on each text of the panel
        assert ppl <= record["base_ppl"][name] * 1.01 * (1 + 1e-6)
    with iv.applied(smol):
        assert perplexity(smol, TEXT, unit="word") == pytest.approx(record["chosen_ppl"]["long windows"], rel=1e-3)
        assert paragraph_perplexity(smol, paragraphs(TEXT), unit="word") == pytest.approx(
            record["chosen_ppl"]["short paragraphs"], rel=1e-3)
    from aura_tl.intervention import Intervention

    assert Intervention.load(iv.save(tmp_path / "c.safetensors")).metadata["calibration"] == record


def test_the_full_panel_holds_the_budget_on_every_kind_of_text(tiny, shared_data, tmp_path):
    """calibration_panel=full: the calibration text's two kinds, PIQA- / HellaSwag-length texts and own
    continuations, each within the budget, each recorded as measured; never a stronger edit than the text alone."""
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    data = ConceptData([f"you stupid idiot {i}, shut up" for i in range(16)] +
                       [f"thank you kindly {i}" for i in range(16)], [1] * 16 + [0] * 16, "test", "text_label")
    options = dict(max_ppl_increase=1.0, calibration_text=str(text), progress=False, strength=4.0, **PROBE_EVERY_BLOCK)
    iv = learn_intervention(tiny, data, "linact", calibration_panel="full", **options)
    record = iv.metadata["calibration"]
    assert list(record["chosen_ppl"]) == list(PANEL) and all(record["texts"][name] > 0 for name in PANEL)
    assert record["texts"]["own continuations"] == CALIBRATION_OWN_PROMPTS  # every one, past the token cap
    assert 0 < iv.strength < 4.0  # the budget binds between the ends on this random model
    for name, ppl in record["chosen_ppl"].items():
        assert ppl <= record["base_ppl"][name] * 1.01 * (1 + 1e-6)
    piqa = short_rows(tiny, task_texts(CALIBRATION_SLICES.task_docs)["PIQA-length"], PANEL_TOKENS)
    assert _perplexity_from_bos(tiny, piqa, "word", 8) == pytest.approx(record["base_ppl"]["PIQA-length"], rel=1e-4)
    with iv.applied(tiny):
        assert _perplexity_from_bos(tiny, piqa, "word", 8) == pytest.approx(record["chosen_ppl"]["PIQA-length"],
                                                                            rel=1e-4)
    text_only = learn_intervention(tiny, data, "linact", calibration_panel="text", **options)  # the text alone
    assert set(text_only.metadata["calibration"]["chosen_ppl"]) == {"long windows", "short paragraphs"}
    assert text_only.strength >= iv.strength
    # near: also calibration's near-toxic texts (rewrites and tweets 500-999), never stronger than full
    near = learn_intervention(tiny, data, "linact", calibration_panel="near", **options)
    record = near.metadata["calibration"]
    assert list(record["chosen_ppl"]) == [*PANEL, *NEAR_TOXIC] and near.strength <= iv.strength
    for name, ppl in record["chosen_ppl"].items():
        assert ppl <= record["base_ppl"][name] * 1.01 * (1 + 1e-6)
    tweets = short_rows(tiny, near_toxic_texts(CALIBRATION_NEAR_TEXTS)[NEAR_TOXIC[1]], PANEL_TOKENS)
    assert _perplexity_from_bos(tiny, tweets, "word", 8) == pytest.approx(record["base_ppl"][NEAR_TOXIC[1]], rel=1e-4)


def test_wikitext_documents_split_at_titles():
    docs = wikitext_documents(" = A = \n one \n = = Sub = = \n two \n = B = \n three \n")
    assert len(docs) == 2 and "Sub" in docs[0]


def test_paragraph_perplexity_scores_each_text_alone_from_bos(tiny):
    """By hand: each paragraph's own sum of -log p(token | BOS and its earlier tokens), pooled over the tokens;
    padding a short one next to a long one changes nothing."""
    import math

    import torch

    from aura_tl.models import hf_tokenizer

    tokenizer = hf_tokenizer(tiny)
    texts = ["The committee met on Tuesday.", "Members agreed that the reading room needs more light, and more."]
    total, count = 0.0, 0
    for text in texts:
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        logprobs = tiny(torch.tensor([ids]))[0].log_softmax(-1)
        total -= float(sum(logprobs[i, ids[i + 1]] for i in range(len(ids) - 1)))
        count += len(ids) - 1
    assert paragraph_perplexity(tiny, texts) == pytest.approx(math.exp(total / count), rel=1e-5)
    assert paragraph_perplexity(tiny, texts, batch_size=1) == pytest.approx(paragraph_perplexity(tiny, texts), rel=1e-6)
    assert paragraphs(" = Title = \n first line \n = = Sub = = \n second line \n") == ["first line", "second line"]


def test_calibrating_a_saved_file_again_equals_learning_with_the_budget(tiny, shared_data, tmp_path):
    """`recalibrated` on a file learned without a budget picks what learning with that budget picks (the same text,
    the same search); options not given are the file's own, and a file without a budget needs one."""
    from aura_tl.intervention import Intervention
    from aura_tl.learn import recalibrated

    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    data = ConceptData([f"you stupid idiot {i}, shut up" for i in range(16)] +
                       [f"thank you kindly {i}" for i in range(16)], [1] * 16 + [0] * 16, "test", "text_label")
    budgeted = learn_intervention(tiny, data, "linact", max_ppl_increase=1.0, calibration_text=str(text),
                                  calibration_panel="full", strength=4.0, progress=False, **PROBE_EVERY_BLOCK)
    plain = learn_intervention(tiny, data, "linact", max_ppl_increase="none", strength=4.0, progress=False,
                               **PROBE_EVERY_BLOCK)
    saved = Intervention.load(plain.save(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="needs a budget"):
        recalibrated(tiny, saved, progress=False)
    again = recalibrated(tiny, saved, max_ppl_increase=1.0, calibration_text=str(text), calibration_panel="full",
                         progress=False)
    assert 0 < again.strength < 4.0 and again.strength == budgeted.strength
    assert again.metadata["calibration"]["chosen_ppl"] == budgeted.metadata["calibration"]["chosen_ppl"]
    # from the calibrated file: its budget and text are kept, a larger cap searches higher, a larger budget allows more
    wider = recalibrated(tiny, again, strength=8.0, max_ppl_increase=50.0, progress=False)
    assert max(s for s, _ in wider.metadata["calibration"]["points"]) == 8.0
    assert wider.metadata["calibration"]["text"] == str(text) and wider.strength > again.strength
    with pytest.raises(ValueError, match="takes only"):
        recalibrated(tiny, saved, gate="tuned")
