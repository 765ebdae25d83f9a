"""The method registry and the option declarations every front end is generated from; files of aura-tl 0.1.0."""

import argparse
from pathlib import Path

import pytest
import torch

from aura_tl.intervention import Intervention
from aura_tl.methods import get_method, method_names, option_specs
from aura_tl.methods.aura import aura_alphas
from aura_tl.options import add_option_flags, fields_of, given_values

FIXTURES = Path(__file__).parent / "fixtures"
TOKENS = torch.tensor([[5, 17, 300, 4000, 12], [7, 8, 9, 10, 11]])


def test_every_builtin_method_is_registered():
    assert {"aura", "det0", "damp", "destein", "linact", "meanact", "lineas"} <= set(method_names())
    with pytest.raises(ValueError, match="unknown method 'bogus'; choose from aura"):
        get_method("bogus")


def test_cli_flags_cover_every_option_with_the_declared_defaults():
    parser = argparse.ArgumentParser()
    specs = option_specs()
    add_option_flags(parser, specs.values())
    flags = {a.dest: a for a in parser._actions}
    for name in method_names():
        for field, _ in fields_of(get_method(name).Options):
            assert field.name in flags, f"{name}.{field.name} has no flag"
            assert specs[field.name].defaults[name] == field.default
    args = parser.parse_args(["--num-experts", "7", "--pairs", "p.tsv", "--causal", "false"])
    assert given_values(args, specs.values()) == {"num_experts": 7, "destein_pairs": "p.tsv", "causal": False}
    # `none` turns off an option whose default is set (linact calibrates by default): given, as None
    args = parser.parse_args(["--max-ppl-increase", "none"])
    assert given_values(args, specs.values()) == {"max_ppl_increase": "none"}
    assert get_method("linact").options(**given_values(args, specs.values())).max_ppl_increase is None


def test_options_parse_strings_and_refuse_unknown_names():
    damp = get_method("damp").options(num_experts="12", damp_alpha="0.25", hooks="hook_post")
    assert (damp.num_experts, damp.damp_alpha) == (12, 0.25)
    with pytest.raises(ValueError, match="'strenght' \\(did you mean 'strength'\\?\\)"):
        get_method("aura").options(strenght="0.5")
    with pytest.raises(ValueError, match="not an option of method 'aura'"):
        get_method("aura").options(num_experts=5)
    assert get_method("linact").options(strength="2").strength == 2.0  # transport maps extrapolate
    cap = get_method("linact").max_strength  # the transport maps' one declared cap
    with pytest.raises(ValueError, match=rf"strength \(lambda\) of linact must be in \[0, {cap:g}\]"):
        get_method("linact").options(strength=str(cap + 1))
    with pytest.raises(ValueError, match=r"strength \(lambda\) of destein must be in \[0, 1\]"):
        get_method("destein").options(strength="2")
    with pytest.raises(ValueError, match="max_per_class"):
        get_method("aura").options(max_per_class=-5)
    with pytest.raises(ValueError, match="not a valid int"):
        get_method("det0").options(num_experts="many")


def test_v010_aura_file_loads_and_applies(tiny):
    iv = Intervention.load(FIXTURES / "v0.1.0-aura-tiny.safetensors")
    assert iv.method == "aura" and iv.strength == 0.8 and iv.metadata["version"] == "0.1.0"
    hook = "blocks.0.mlp.hook_post"
    assert iv.hook_names == [hook, "blocks.1.mlp.hook_post"]
    auroc, alpha = iv.tensors[hook]["auroc"], iv.tensors[hook]["alpha"]
    torch.testing.assert_close(alpha, aura_alphas(auroc))  # the file's alphas are AurA's of its AUROCs
    _, plain = tiny.run_with_cache(TOKENS, names_filter=hook)
    seen = {}
    with iv.applied(tiny), tiny.hooks(fwd_hooks=[(hook, lambda a, hook: seen.setdefault("x", a.clone()))]):
        tiny(TOKENS)
    torch.testing.assert_close(seen["x"], plain[hook] * (1 - 0.8 * (1 - alpha)))


def test_v010_destein_file_loads_and_applies(tiny):
    iv = Intervention.load(FIXTURES / "v0.1.0-destein-tiny.safetensors")
    assert iv.method == "destein" and set(iv.tensors["blocks.0.hook_attn_out"]) == {"direction"}
    with iv.applied(tiny):
        steered = tiny(TOKENS)
    assert not torch.allclose(steered, tiny(TOKENS))


def test_newer_format_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "future.safetensors"
    save_file({"alpha/blocks.0.mlp.hook_post": torch.ones(3)}, str(path),
              metadata={"format": "aura-tl/intervention/v99", "method": "aura"})
    with pytest.raises(ValueError, match="newer aura-tl"):
        Intervention.load(path)


def test_saved_responses_are_keyed_on_hooks(tiny, tmp_path, caplog):
    from aura_tl.data import ConceptData
    from aura_tl.responses import cached_responses

    data = ConceptData(["you idiot", "thank you", "shut up fool", "lovely day"], [1, 0, 1, 0], "t", "text_label")
    path = tmp_path / "r.safetensors"
    first = cached_responses(tiny, data, "hook_post", pooling="max", batch_size=4, path=path, progress=False)
    other = cached_responses(tiny, data, "hook_attn_out", pooling="max", batch_size=4, path=path, progress=False)
    assert set(first.pooled) == {"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"}
    assert set(other.pooled) == {"blocks.0.hook_attn_out", "blocks.1.hook_attn_out"}
    assert "recomputing" in caplog.text
    again = cached_responses(tiny, data, "hook_attn_out", pooling="max", batch_size=4, path=path, progress=False)
    torch.testing.assert_close(again.pooled["blocks.1.hook_attn_out"], other.pooled["blocks.1.hook_attn_out"])
