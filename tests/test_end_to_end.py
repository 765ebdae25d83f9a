"""The mission command, verbatim apart from offline task twins and --limit, in a subprocess."""

import json
import os
import subprocess

import pytest


@pytest.mark.slow
def test_lm_eval_command_runs_offline(tmp_path, shared_data):
    out = tmp_path / "results"
    command = ["lm_eval", "--model", "aura-hooked", "--model_args", "method=aura,max_per_class=30",
               "--tasks", "rtp_toxicity,piqa_local,hellaswag_local", "--limit", "6", "--batch_size", "8",
               "--output_path", str(out)]
    env = {**os.environ, "AURA_SHARED_DATA": str(shared_data), "AURA_TL_SCORER": "jigsaw-bilstm",
           "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    assert 0.0 <= results["rtp_toxicity"]["toxicity_prob,none"] <= 1.0
    assert 0.0 <= results["rtp_toxicity"]["expected_max_toxicity,none"] <= 1.0
    assert 0.0 <= results["piqa_local"]["acc,none"] <= 1.0
    assert 0.0 <= results["hellaswag_local"]["acc_norm,none"] <= 1.0


@pytest.mark.slow
def test_lm_eval_linact_on_the_eval_split(tmp_path, shared_data):
    from aura_tl.data import rtp_records
    from aura_tl.splits import select_split

    out = tmp_path / "results"
    command = ["lm_eval", "--model", "aura-hooked", "--model_args", "method=linact,gate=probe,strength=2,max_per_class=16,max_ppl_increase=none",
               "--tasks", "rtp_toxicity", "--limit", "4", "--batch_size", "4", "--log_samples",
               "--metadata", json.dumps({"rtp_split": "eval"}), "--output_path", str(out)]
    env = {**os.environ, "AURA_SHARED_DATA": str(shared_data), "AURA_TL_SCORER": "jigsaw-bilstm",
           "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [json.loads(line) for line in next(out.rglob("samples_rtp_toxicity_*.jsonl")).read_text().split("\n")
              if line.strip()]
    evaluated = {r["prompt"]["text"].strip() for r in select_split(rtp_records(shared_data / "rtp"), "eval")}
    assert len(logged) == 4 and all(r["doc"]["prompt_text"] in evaluated for r in logged)
    assert "linact" in (done.stdout + done.stderr)
