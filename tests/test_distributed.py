"""Data-parallel lm-eval: `torchrun --nproc_per_node 2 -m lm_eval --model aura-hooked ...` (gloo on CPU) gives the
metrics of one process, and learning is sharded over the ranks with the tensors of one process."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

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
            f"model={folder},method=linact,gate=probe,data=embedded,max_per_class=16,max_ppl_increase=none", "--tasks", "piqa_local,rtp_toxicity",
            "--limit", "10", "--output_path", str(out)]
    env = {**os.environ, "AURA_TL_SCORER": "jigsaw-bilstm", "AURA_TL_CACHE": str(cache), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(Path(sorted(glob.glob(f"{out}/**/results_*.json", recursive=True))[-1]).read_text())
    return results, done.stderr


@pytest.mark.slow
def test_two_processes_give_the_metrics_of_one(tiny_folder, tmp_path):
    one, _ = run([sys.executable], tiny_folder, tmp_path / "one", tmp_path / "cache1")
    two, log = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], tiny_folder,
                   tmp_path / "two", tmp_path / "cache2")
    assert "Building contexts for piqa_local on rank 1" in log
    assert log.count("learned and cached") == 2  # both ranks learned together (sharded), rank 0 wrote the entry
    for task, metrics in one["results"].items():
        for name, value in metrics.items():
            if isinstance(value, float):
                assert two["results"][task][name] == pytest.approx(value, abs=1e-9), (task, name)


def learn_files(prefix, folder, out, method, per_class):
    done = subprocess.run([*prefix, "-m", "aura_tl.cli", "learn", "--model", str(folder), "--method", method, "--data",
                           "embedded", "--max-per-class", str(per_class), "--max-ppl-increase", "none",
                           *(["--gate", "probe"] if method == "linact" else []), "-o", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-3000:]
    from safetensors.torch import load_file

    return load_file(str(out))


@pytest.mark.slow
@pytest.mark.parametrize("method, per_class", [("aura", 40), ("linact", 40), ("linact", 2)])
def test_sharded_learning_equals_one_process(tiny_folder, tmp_path, method, per_class):
    """`torchrun --nproc_per_node 2 -m aura_tl.cli learn`: each rank pools its share of the length batches, the
    shards are summed (all-reduce), every rank fits the same maps (causally for linact), rank 0 saves: the tensors
    equal one process's exactly, also when one rank has no batch at all (2 sentences per class)."""
    import torch

    one = learn_files([sys.executable], tiny_folder, tmp_path / "one.safetensors", method, per_class)
    two = learn_files([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], tiny_folder,
                      tmp_path / "two.safetensors", method, per_class)
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
