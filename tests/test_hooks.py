import pytest

from aura_tl.hooks import last_block, resolve_hook_names, split_patterns


def test_default_and_short_forms(tiny):
    assert resolve_hook_names(tiny) == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    assert resolve_hook_names(tiny, "hook_pre_linear") == ["blocks.0.mlp.hook_pre_linear", "blocks.1.mlp.hook_pre_linear"]
    assert resolve_hook_names(tiny, "blocks.1.hook_mlp_out, blocks.0.attn.hook_z") == [
        "blocks.0.attn.hook_z", "blocks.1.hook_mlp_out"]
    assert split_patterns("hook_pre|hook_post") == ["blocks.*.mlp.hook_pre", "blocks.*.mlp.hook_post"]


def test_typo_gets_a_suggestion(tiny):
    with pytest.raises(ValueError, match=r"matches no hook.*did you mean 'blocks\.\*\.mlp\.hook_post'"):
        resolve_hook_names(tiny, "blocks.*.mlp.hook_psot")


def test_last_block_is_the_deepest_hooked_block_or_none_outside_the_blocks():
    assert last_block(["blocks.3.hook_attn_out", "blocks.11.mlp.hook_post", "blocks.7.attn.hook_z"]) == 11
    assert last_block(["blocks.0.hook_attn_out"]) == 0
    assert last_block(["blocks.2.hook_attn_out", "ln_final.hook_normalized"]) is None  # the final norm: whole pass
    assert last_block(["hook_embed"]) is None
