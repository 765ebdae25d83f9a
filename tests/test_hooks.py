import pytest

from aura_tl.hooks import resolve_hook_names, split_patterns


def test_default_and_short_forms(tiny):
    assert resolve_hook_names(tiny) == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    assert resolve_hook_names(tiny, "hook_pre_linear") == ["blocks.0.mlp.hook_pre_linear", "blocks.1.mlp.hook_pre_linear"]
    assert resolve_hook_names(tiny, "blocks.1.hook_mlp_out, blocks.0.attn.hook_z") == [
        "blocks.0.attn.hook_z", "blocks.1.hook_mlp_out"]
    assert split_patterns("hook_pre|hook_post") == ["blocks.*.mlp.hook_pre", "blocks.*.mlp.hook_post"]


def test_typo_gets_a_suggestion(tiny):
    with pytest.raises(ValueError, match=r"matches no hook.*did you mean 'blocks\.\*\.mlp\.hook_post'"):
        resolve_hook_names(tiny, "blocks.*.mlp.hook_psot")
