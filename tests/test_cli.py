import subprocess
import sys

import pytest
import torch

from aura_tl.cli import main
from aura_tl.intervention import Intervention


@pytest.fixture(scope="module")
def learned(tmp_path_factory, smol):
    out = tmp_path_factory.mktemp("cli") / "aura.safetensors"
    assert main(["learn", "--method", "aura", "--data", "embedded", "--max-per-class", "24", "--hooks", "blocks.1[0-4].mlp.hook_post", "-o", str(out)]) == 0
    return out


def test_learn_writes_an_intervention(learned, capsys):
    iv = Intervention.load(learned)
    assert iv.method == "aura" and iv.hook_names == [f"blocks.1{i}.mlp.hook_post" for i in range(5)]
    assert iv.metadata["data"]["counts"] == {"0": 24, "1": 24} or iv.metadata["data"]["counts"] == {0: 24, 1: 24}


def test_inspect_and_plot(learned, tmp_path, capsys):
    png = tmp_path / "plot.png"
    assert main(["inspect", str(learned), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "blocks.12.mlp.hook_post" in printed and png.stat().st_size > 10_000


def test_generate_side_by_side(learned, capsys):
    assert main(["generate", "--intervention", str(learned), "--prompt", "You are a", "--max-new-tokens", "5"]) == 0
    printed = capsys.readouterr().out
    assert "plain:" in printed and "aura:" in printed


def test_bad_hook_is_a_clean_error(capsys):
    assert main(["learn", "--hooks", "blocks.*.mlp.hook_psot", "--max-per-class", "4", "-o", "/tmp/x.st"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_console_script_runs():
    done = subprocess.run([sys.executable, "-m", "aura_tl.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "learn" in done.stdout


def test_destein_learn_and_heat_map(tmp_path, shared_data, capsys):
    out = tmp_path / "destein.safetensors"
    assert main(["learn", "--method", "destein", "--pairs", str(shared_data / "paradetox" / "paradetox.tsv"),
                 "--count", "10", "-o", str(out)]) == 0
    iv = Intervention.load(out)
    assert iv.method == "destein" and len(iv.metadata["probe_accuracy"]) == 30
    png = tmp_path / "heat.png"
    assert main(["inspect", str(out), "--plot", str(png)]) == 0
    assert png.stat().st_size > 10_000 and "mean_probe_acc" in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "empty.csv", "is empty"),
    (lambda d: d / "binary.csv", "not UTF-8 text"),
])
def test_unreadable_data_files_are_named(tmp_path, capsys, make, message):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "binary.csv").write_bytes(b"text,label\n\xbf\xff\x00\x81,1\n")
    assert main(["learn", "--data", str(make(tmp_path)), "-o", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(make(tmp_path)) in err and not (tmp_path / "o.safetensors").exists()


def test_bad_output_paths_fail_before_any_work(tmp_path, capsys, monkeypatch):
    import aura_tl.models

    monkeypatch.setattr(aura_tl.models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["learn", "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    import os

    real_access = os.access  # root may write anywhere: the check asks os.access, which reports read-only here
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    assert main(["learn", "-o", str(locked / "x.safetensors")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_negative_max_per_class_is_refused(capsys):
    assert main(["learn", "--max-per-class", "-5", "-o", "/tmp/never.safetensors"]) == 2
    assert "max_per_class must be at least 1" in capsys.readouterr().err


def test_calibrate_a_saved_file_to_a_new_budget(tiny_dir, tmp_path, capsys):
    """`aura-tl calibrate`: a file learned without a budget is refused before the model loads; with one, the file
    written is the same intervention at the strength the budget allows, searched up to the cap given."""
    plain, out = tmp_path / "plain.safetensors", tmp_path / "calibrated.safetensors"
    assert main(["learn", "--model", str(tiny_dir), "--method", "linact", "--data", "embedded", "--max-per-class", "16",
                 "--hooks", "hook_attn_out", "--gate", "false", "--max-ppl-increase", "none", "--strength", "1",
                 "-o", str(plain)]) == 0
    assert main(["calibrate", str(plain), "--model", "/nonexistent", "-o", str(out)]) == 2
    assert "needs a budget" in capsys.readouterr().err and not out.exists()
    assert main(["calibrate", str(plain), "--model", str(tiny_dir), "--max-ppl-increase", "1000", "--strength", "2",
                 "-o", str(out)]) == 0
    assert "strength 2 (searched up to 2)" in capsys.readouterr().out
    before, after = Intervention.load(plain), Intervention.load(out)
    assert after.strength == 2.0 and after.metadata["calibration"]["max_ppl_increase"] == 1000.0
    assert after.metadata["options"]["max_ppl_increase"] == 1000.0 and after.hook_names == before.hook_names
    assert all(torch.equal(after.tensors[h][k], v) for h, named in before.tensors.items() for k, v in named.items())
