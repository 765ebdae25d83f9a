"""docs/tutorial.md's Python blocks run, in order, in one namespace: the tutorial cannot rot."""

import re
import warnings
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_tutorial_has_code():
    blocks = python_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 4 and "responses_from_cache" in blocks[1] and "simple_evaluate" in blocks[-1]


@pytest.mark.slow
def test_tutorial_runs(tmp_path, monkeypatch, shared_data, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AURA_TL_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for number, block in enumerate(python_blocks(TUTORIAL.read_text()), 1):
            exec(compile(block, f"{TUTORIAL.name} block {number}", "exec"), namespace)  # noqa: S102 - our own docs
    out = capsys.readouterr().out
    assert (tmp_path / "aura-experts.png").stat().st_size > 10_000 and (tmp_path / "act.safetensors").is_file()
    assert "steered:" in out and "rtp_toxicity" in out and "'method': 'linact'" in out
    assert namespace["results"]["results"]["piqa_local"]["acc,none"] >= 0
