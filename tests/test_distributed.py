"""Data-parallel lm-eval: `torchrun --nproc_per_node 2 -m lm_eval --model aura-hooked ...` (gloo on CPU) gives the
metrics of one process; rank 0 learns the intervention and rank 1 reads it from the cache."""

import glob
import json
import os
import subprocess
import sys

import pytest

from aura_tl.models import resolve_hf_folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tinyrandom")
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_hf_folder("smollm2-135m")))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                                 tie_word_embeddings=True)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run(prefix, folder, out, cache):
    args = ["-m", "lm_eval", "--model", "aura-hooked", "--model_args",
            f"model={folder},method=linact,data=embedded,max_per_class=16", "--tasks", "piqa_local,rtp_toxicity",
            "--limit", "10", "--output_path", str(out)]
    env = {**os.environ, "AURA_TL_SCORER": "jigsaw-bilstm", "AURA_TL_CACHE": str(cache), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(open(sorted(glob.glob(f"{out}/**/results_*.json", recursive=True))[-1]).read())
    return results, done.stderr


@pytest.mark.slow
def test_two_processes_give_the_metrics_of_one(tiny_folder, tmp_path):
    one, _ = run([sys.executable], tiny_folder, tmp_path / "one", tmp_path / "cache1")
    two, log = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], tiny_folder,
                   tmp_path / "two", tmp_path / "cache2")
    assert "Building contexts for piqa_local on rank 1" in log
    assert "learned and cached" in log and "read from the cache" in log  # rank 0 learned, rank 1 read
    for task, metrics in one["results"].items():
        for name, value in metrics.items():
            if isinstance(value, float):
                assert two["results"][task][name] == pytest.approx(value, abs=1e-9), (task, name)
