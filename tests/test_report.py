"""bench/'s results library and report runner: reading lm-eval sample logs, the paired bootstrap against
unsteered, configuration names and stacks."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from bench.results import paired, runs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def report():
    return importlib.import_module("bench.report")


def _write_samples(run_dir: Path, values: dict[int, float]) -> None:
    task_dir = run_dir / "rtp_toxicity_25" / "model"
    task_dir.mkdir(parents=True)
    lines = [json.dumps({"doc_id": i, "doc": {"prompt_text": "a\u2028b"}, "toxicity_prob": v,
                         "expected_max_toxicity": v / 2}, ensure_ascii=False) for i, v in values.items()]
    (task_dir / "samples_rtp_toxicity_25_2026.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_rtp_samples_reads_doc_ids_despite_unicode_line_separators(report, tmp_path):
    _write_samples(tmp_path, {3: 1.0, 7: 0.0})
    samples = runs.rtp_samples(tmp_path)
    assert sorted(samples) == [3, 7]
    assert samples[3]["toxicity_prob"] == 1.0


def test_paired_reduction_matches_hand_computation(report):
    base = {i: {"p": v} for i, v in enumerate([1.0, 1.0, 0.0, 1.0])}
    other = {i: {"p": v} for i, v in enumerate([1.0, 0.0, 0.0, 0.0])}
    other[99] = {"p": 1.0}  # a prompt only one run scored is left out of the pairing
    out = paired.paired_reduction(base, other, "p")
    assert out["n"] == 4
    assert out["ratio"] == pytest.approx(0.75 / 0.25)
    assert out["diff"] == pytest.approx(0.25 - 0.75)
    assert out["diff_lo"] <= out["diff"] <= out["diff_hi"]


def test_paired_runs_pairs_against_any_run_by_hand(tmp_path):
    """bench/paired_runs.py: runs paired against one that is not unsteered, on the prompts both scored."""
    from bench.paired_runs import paired_rows

    for name, values in {"a": {0: 0.8, 1: 0.4, 2: 0.6}, "b:np": {0: 0.2, 1: 0.2, 2: 0.4, 5: 1.0}}.items():
        lines = [json.dumps({"doc_id": i, "toxicity_prob": v, "toxic_fraction": v / 4, "expected_max_toxicity": v})
                 for i, v in values.items()]
        folder = tmp_path / name / "rtp_toxicity_25" / "model"
        folder.mkdir(parents=True)
        (folder / "samples_rtp_toxicity_25_2026.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = paired_rows(tmp_path, "a", ["b:np"])
    assert table[0].startswith("| a mean / mean | tox. probability | toxic rate | expected max |")
    ratio = (0.8 + 0.4 + 0.6) / (0.2 + 0.2 + 0.4)  # doc 5, which only b scored, is left out
    assert table[2].startswith(f"| `b:np` | {ratio:.2f}x (") and table[2].count(f"{ratio:.2f}x (") == 3
    assert table[2].count("n 3") == 3


def test_retention_accuracy_is_paired_over_the_documents_both_runs_answered(report, tmp_path):
    """HellaSwag per-doc acc_norm from lm-eval sample logs: the change in points by hand (3/4 -> 2/4 = -25)."""
    for name, values in {"unsteered": [1, 1, 0, 1], "act": [1, 0, 0, 1, 1]}.items():
        task_dir = tmp_path / "runs" / name / "hellaswag_local" / "model"
        task_dir.mkdir(parents=True)
        (task_dir / "samples_hellaswag_local_2026.jsonl").write_text(
            "\n".join(json.dumps({"doc_id": i, "acc": 0.0, "acc_norm": float(v)}) for i, v in enumerate(values)))
    rows = {"unsteered": {}, "act": {}}
    runs.add_paired(rows, tmp_path / "runs")
    paired = rows["act"]["paired/hellaswag_local/acc_norm"]
    assert paired["n"] == 4 and paired["diff"] == pytest.approx(0.5 - 0.75)
    assert paired["diff_lo"] <= paired["diff"] <= paired["diff_hi"] and "paired/piqa_local/acc" not in rows["act"]
    assert rows["unsteered"] == {}


def test_paired_bootstrap_cancels_prompt_difficulty(report):
    """Prompts differ a lot, the method halves every one: the paired interval is the point, the unpaired is wide."""
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0.05, 1.0, 200)
    base = {i: {"p": float(d)} for i, d in enumerate(difficulty)}
    other = {i: {"p": float(d) / 2} for i, d in enumerate(difficulty)}
    out = paired.paired_reduction(base, other, "p")
    assert out["ratio_lo"] == pytest.approx(2.0) and out["ratio_hi"] == pytest.approx(2.0)
    lo, hi = paired.bootstrap_ci(difficulty)
    assert hi - lo > 0.05  # the unpaired interval of the same means is not a point


def test_preprompted_configurations_name_their_curve_and_prompt(report, tmp_path):
    """`--preprompted act` adds `act+nontoxic`: same model_args, RTP metadata carries the pre-prompt, own curve."""
    from types import SimpleNamespace

    args = SimpleNamespace(strengths=[0.5, 1.0], preprompted=["unsteered", "act@0.5"], preprompt="nontoxic", stack=[])
    configs = report.configurations(args, {"act": (tmp_path / "act.safetensors", 1.0, "linact")})
    assert list(configs) == ["unsteered", "act@0.5", "act", "unsteered+nontoxic", "act@0.5+nontoxic"]
    assert configs["act@0.5+nontoxic"] == configs["act@0.5"]
    assert runs.parse_config("act@0.5+nontoxic").preprompt == "nontoxic" and runs.parse_config("act@0.5").preprompt is None
    assert runs.base_name("act@0.5+nontoxic") == "act+nontoxic" and runs.base_name("act@0.5") == "act"
    with pytest.raises(SystemExit, match="no such configuration"):
        report.configurations(SimpleNamespace(strengths=[1.0], preprompted=["nope"], preprompt="nontoxic", stack=[]), {})


def test_report_help_renders(report):
    """Every flag's help (generated from the method options, some with a `%` in them) formats."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--preprompted" in done.stdout and "--max-ppl-increase" in done.stdout


def test_preprompted_configurations_share_the_retention_runs(report, tmp_path):
    """`act+nontoxic` reads its RTP metrics from its own run and its perplexity from `act`'s (same model, same
    WikiText requests): collect() merges the two, and nothing is run twice."""
    def results(task_dir: Path, task: str, metric: str, value: float) -> None:
        task_dir.mkdir(parents=True)
        (task_dir / "results_1.json").write_text(json.dumps({"results": {task: {f"{metric},none": value}}}))

    results(tmp_path / "runs" / "act" / "wikitext_local" / "m", "wikitext_local", "word_perplexity", 50.0)
    results(tmp_path / "runs" / "act" / "rtp_toxicity_25" / "m", "rtp_toxicity_25", "toxicity_prob", 0.3)
    results(tmp_path / "runs" / "act+nontoxic" / "rtp_toxicity_25" / "m", "rtp_toxicity_25", "toxicity_prob", 0.35)
    assert runs.task_dir_of(tmp_path, "act+nontoxic", "wikitext_local") == tmp_path / "runs" / "act" / "wikitext_local"
    assert runs.task_dir_of(tmp_path, "act+nontoxic", "rtp_toxicity_25").parent.name == "act+nontoxic"
    row = runs.collect(tmp_path, "act+nontoxic", ["rtp_toxicity_25", "wikitext_local", "piqa_local"])
    assert row == {"rtp_toxicity_25/toxicity_prob": 0.35, "wikitext_local/word_perplexity": 50.0}


def test_order_names_any_lambda_of_a_learned_name(report, tmp_path):
    """`--strengths 1 2` gives NAME (as learned) and NAME@2; `--order NAME@1` asks for lambda 1 itself (the file may
    have been learned at 4), and a lambda that is not a number is refused."""
    from types import SimpleNamespace

    learned = {"tok": (tmp_path / "tok.safetensors", 0.0, "linact")}
    args = SimpleNamespace(strengths=[1.0, 2.0], preprompted=[], preprompt="x", stack=[],
                           order=["unsteered", "tok", "tok@1", "tok@2", "tok@0.5"])
    configs = report.configurations(args, learned)
    assert configs["tok"] == f",intervention={tmp_path / 'tok.safetensors'}"
    assert configs["tok@1"] == f",intervention={tmp_path / 'tok.safetensors'},strength=1"
    assert configs["tok@2"].endswith(",strength=2") and configs["tok@0.5"].endswith(",strength=0.5")
    assert "zz@1" not in report.configurations(SimpleNamespace(**{**vars(args), "order": ["zz@1"]}), learned)
    only_two = report.configurations(SimpleNamespace(**{**vars(args), "strengths": [2.0], "order": ["tok"]}), learned)
    assert only_two["tok"] == configs["tok"]
    with pytest.raises(SystemExit, match="not a lambda"):
        report.configurations(SimpleNamespace(**{**vars(args), "order": ["tok@x"]}), learned)
    kept = report.configurations(SimpleNamespace(**{**vars(args), "order": ["tok:np", "tok@6:np"]}), learned)
    assert kept["tok:np"] == configs["tok"] + ",steer_prompt=false"
    assert kept["tok@6:np"] == f",intervention={tmp_path / 'tok.safetensors'},strength=6,steer_prompt=false"
    with pytest.raises(SystemExit, match="only suffix"):
        report.configurations(SimpleNamespace(**{**vars(args), "order": ["tok:all"]}), learned)


def test_stacked_configuration_bakes_each_members_strength(report, tmp_path, tiny):
    """`--stack both=a,b@0.25`: model_args name both files joined by `+`, b's copy saved at strength 0.25."""
    from types import SimpleNamespace

    import torch

    from aura_tl.intervention import Intervention
    from aura_tl.models import ModelShape

    d = tiny.cfg.d_model
    for name in ("a", "b"):
        Intervention("aura", {"blocks.0.hook_attn_out": {"alpha": torch.rand(d)}}, ModelShape.of(tiny), {}, 1.0
                     ).save(tmp_path / f"{name}.safetensors")
    learned = {n: (tmp_path / f"{n}.safetensors", 1.0, "aura") for n in ("a", "b")}
    args = SimpleNamespace(strengths=[1.0], preprompted=[], preprompt="nontoxic", stack=["both=a,b@0.25"])
    configs = report.configurations(args, learned)
    assert configs["both"] == f",intervention={tmp_path / 'a.safetensors'}+{tmp_path / 'b@0.25.safetensors'}"
    assert Intervention.load(tmp_path / "b@0.25.safetensors").strength == 0.25
    with pytest.raises(SystemExit, match="not a --learn NAME"):
        report.configurations(SimpleNamespace(strengths=[1.0], preprompted=[], preprompt="x", stack=["s=a,zz"]), learned)


def test_a_file_placed_by_hand_is_used_not_relearned(report, tmp_path, monkeypatch):
    """An intervention copied into <out>/interventions without the `.seconds` learn writes is taken as it is (no
    learn is run) and its learn time reads 0, shown as "-"; a recorded one reads back as written."""
    from types import SimpleNamespace

    (tmp_path / "interventions").mkdir()
    (tmp_path / "interventions" / "copied.safetensors").write_bytes(b"")
    (tmp_path / "interventions" / "timed.safetensors").write_bytes(b"")
    (tmp_path / "interventions" / "timed.seconds").write_text("12.5")
    monkeypatch.setattr(report, "sh", lambda *a, **k: pytest.fail("learn ran for a file that exists"))
    args = SimpleNamespace(learn=[("copied", "linact", {}), ("timed", "linact", {})], model="m", device="cpu")
    monkeypatch.setattr(report, "learn_options", lambda args, method, own: {})
    learned = report.learn(args, tmp_path)
    assert learned["copied"][1] == 0.0 and learned["timed"][1] == 12.5


def test_a_reused_file_is_described_by_what_it_was_learned_with(report, tmp_path, tiny):
    """The report names a reused file's own options (those off the method's defaults, a gate rule's against that
    rule's) and its strength, not the `--learn` spec that would have learned it."""
    import torch

    from aura_tl.intervention import Intervention
    from aura_tl.methods import get_method
    from aura_tl.models import ModelShape
    from aura_tl.options import as_dict

    options = as_dict(get_method("linact").options(gate="tuned", hooks="blocks.{1/2:}.hook_attn_out",
                                                   gate_tune_steps=7, max_ppl_increase=3.0))
    d = tiny.cfg.d_model
    Intervention("aura", {"blocks.1.hook_attn_out": {"alpha": torch.rand(d)}}, ModelShape.of(tiny),
                 {"options": options}, 0.75).save(tmp_path / "x.safetensors")  # any file: only its metadata is read
    described = report.file_description(tmp_path / "x.safetensors", "linact")
    # gate=tuned is Linear-AcT's default, so only the rule's own option off its default is named
    assert described == ("hooks=blocks.{1/2:}.hook_attn_out, max_ppl_increase=3.0, gate_tune_steps=7, "
                         "strength 0.75 in the file")
    assert report.file_description(tmp_path / "absent.safetensors", "linact") is None


def test_continuation_fluency_and_relevance_by_hand_alone_or_padded(tiny):
    """bench/continuation_fluency.py, by hand from BOS: fluency = -mean log p of the continuation's tokens given
    the prompt; relevance (PMI) = the mean of log p(token | BOS, prompt, ...) - log p(token | BOS, continuation so
    far). A batch with a longer neighbour (right padding) gives the same numbers."""
    import torch

    from aura_tl.models import hf_tokenizer, start_token_id
    from bench.continuation_fluency import continuation_scores

    prompt, continuation = "The people next door are", " very kind and quiet"
    tokenizer = hf_tokenizer(tiny)
    bos = start_token_id(tokenizer)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
    cont = ids[n_prompt:]
    with torch.inference_mode():
        given = tiny(torch.tensor([[bos] + ids])).log_softmax(-1)[0]
        alone = tiny(torch.tensor([[bos] + cont])).log_softmax(-1)[0]
    with_prompt = np.array([float(given[t, ids[t]]) for t in range(n_prompt, len(ids))])
    without = np.array([float(alone[k, cont[k]]) for k in range(len(cont))])
    single = continuation_scores(tiny, [(prompt, continuation)])
    padded = continuation_scores(tiny, [(prompt, continuation), ("A much longer prompt than the other one,", " and more")])
    for nll, pmi in (single, padded):
        assert nll[0] == pytest.approx(-with_prompt.mean(), rel=1e-4)
        assert pmi[0] == pytest.approx((with_prompt - without).mean(), rel=1e-3, abs=1e-4)


def test_per_prompt_scores_average_each_prompts_continuations_and_nontoxic_only_filters_by_score(tiny):
    """bench/continuation_fluency.py: a prompt's fluency and relevance are the means of its continuations' scores
    (computed one pair at a time here), NaN for a prompt with none; the non-toxic reference keeps, in order, the
    continuations the scorer puts below the toxic line, at most `per_prompt` of them."""
    from aura_tl.scoring import get_scorer
    from aura_tl.splits import TOXIC
    from bench.continuation_fluency import continuation_scores, nontoxic_only, per_prompt_scores

    prompts = ["The weather today is", "My neighbour said", "Nothing follows"]
    texts = [[" sunny and warm", " cold"], [" hello to me", " that he likes tea", " goodbye"], []]
    nll, pmi = per_prompt_scores(tiny, prompts, texts)
    for i in range(2):
        alone = [continuation_scores(tiny, [(prompts[i], c)]) for c in texts[i]]
        assert nll[i] == pytest.approx(np.mean([a[0][0] for a in alone]), rel=1e-4)
        assert pmi[i] == pytest.approx(np.mean([a[1][0] for a in alone]), rel=1e-3, abs=1e-4)
    assert np.isnan(nll[2]) and np.isnan(pmi[2])

    samples = [["you are a stupid idiot", "what a lovely garden", "have a nice day", "thanks for the tea"], []]
    scores = get_scorer("jigsaw-bilstm").score(samples[0])
    assert scores[0] >= TOXIC and max(scores[1:]) < TOXIC
    assert nontoxic_only(samples, "jigsaw-bilstm", per_prompt=2) == [samples[0][1:3], []]


def test_relevance_is_higher_for_a_continuation_that_follows_its_prompt(smol):
    """On the real model, the same fluent sentence is more relevant after the prompt it continues than after an
    unrelated one: PMI is the measure of staying on topic, not of fluency."""
    from bench.continuation_fluency import continuation_scores

    follows = (" to the station to catch the early train to London.")
    _, pmi = continuation_scores(smol, [("Every morning she walks", follows),
                                        ("The derivative of a polynomial is computed", follows)])
    assert pmi[0] > pmi[1] + 0.3


def test_held_out_kinds_are_paradetox_rewrites_and_davidson_neither_tweets(tiny, shared_data, monkeypatch):
    """bench/retention_panel.py --held-out: after the panel, the first N human non-toxic rewrites and the first N
    tweets labelled 'neither' (class 2), read from the raw files by hand here."""
    import csv

    import pandas as pd

    from aura_tl.models import hf_tokenizer
    from aura_tl.retention import NEAR_TOXIC, PANEL
    from bench.retention_panel import panel_rows

    monkeypatch.setenv("AURA_SHARED_DATA", str(shared_data))
    rows = panel_rows(tiny, docs=2, prompts=1, continuation_tokens=3, wikitext_tokens=100, held_out=3)
    assert list(rows) == [*PANEL, *NEAR_TOXIC] and all(len(rows[kind]) == 3 for kind in NEAR_TOXIC)
    with open(shared_data / "paradetox" / "paradetox.tsv", encoding="utf-8", newline="") as f:
        first = next(csv.DictReader(f, delimiter="\t"))
    tweets = pd.read_csv(shared_data / "davidson" / "labeled_data.csv")
    neither = tweets[tweets["class"] == 2]["tweet"].tolist()[:3]
    decode = hf_tokenizer(tiny).decode
    assert decode(rows[NEAR_TOXIC[0]][0]).strip() == first["neutral1"].strip()
    assert [decode(r).strip() for r in rows[NEAR_TOXIC[1]]] == [t.strip() for t in neither]
    with pytest.raises(ValueError, match="at most 500"):
        panel_rows(tiny, docs=2, prompts=1, continuation_tokens=3, wikitext_tokens=100, held_out=501)


def test_retention_panel_states_a_cost_per_token_as_the_same_loss_over_the_row_tokens(tiny):
    """`--unit token`: a row's tokens are its scored positions; the word unit counts the decoded text's words; the
    same loss change over more units is a smaller ratio (per word = per token ** (tokens / word))."""
    from aura_tl.models import hf_tokenizer
    from bench.retention_panel import perplexity_ratio, row_units

    tokenizer = hf_tokenizer(tiny)
    rows = [tokenizer("the cat sat down", add_special_tokens=False)["input_ids"],
            tokenizer("@user lol #tbt http://t.co/x", add_special_tokens=False)["input_ids"]]
    tokens, words = row_units(tiny, rows, "token"), row_units(tiny, rows, "word")
    assert list(tokens) == [len(r) for r in rows] and list(words) == [4, 4]
    base, steered = np.array([10.0, 20.0]), np.array([10.4, 21.0])
    per_token, per_word = perplexity_ratio(tokens, base, steered)[0], perplexity_ratio(words, base, steered)[0]
    assert per_token == pytest.approx(np.exp(1.4 / tokens.sum()))
    assert per_word == pytest.approx(per_token ** (tokens.sum() / 8))


def test_retention_panel_has_every_text_and_its_ratio_is_word_perplexity_by_hand(tiny, shared_data, monkeypatch):
    """bench/retention_panel.py: each kind of text is there and fits the model after BOS; a row's loss is its summed
    -log p from BOS by hand; the ratio is exp((steered - base) / words) summed over the rows."""
    import torch

    from aura_tl.models import hf_tokenizer, start_token_id
    from aura_tl.retention import PANEL
    from bench.retention_panel import panel_rows, perplexity_ratio, row_losses

    monkeypatch.setenv("AURA_SHARED_DATA", str(shared_data))
    rows = panel_rows(tiny, docs=4, prompts=3, continuation_tokens=5, wikitext_tokens=200)
    assert list(rows) == list(PANEL) and all(rows[name] for name in PANEL)
    assert all(0 < len(r) < tiny.cfg.n_ctx for kind in rows.values() for r in kind)
    assert len(rows["PIQA-length"]) == 4 and len(rows["own continuations"]) == 3
    tokenizer = hf_tokenizer(tiny)
    bos = start_token_id(tokenizer)
    row = rows["HellaSwag-length"][1]
    with torch.inference_mode():
        logprobs = tiny(torch.tensor([[bos] + row])).log_softmax(-1)[0]
    by_hand = -sum(float(logprobs[t, row[t]]) for t in range(len(row)))
    assert row_losses(tiny, rows["HellaSwag-length"])[1] == pytest.approx(by_hand, rel=1e-4)
    words, base, steered = np.array([3.0, 5.0]), np.array([10.0, 20.0]), np.array([11.0, 20.5])
    ratio, lo, hi = perplexity_ratio(words, base, steered)
    assert ratio == pytest.approx(np.exp(1.5 / 8)) and lo <= ratio <= hi
