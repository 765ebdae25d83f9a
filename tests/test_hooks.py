import pytest

from aura_tl.hooks import expand_layer_ranges, last_block, resolve_hook_names, split_patterns


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


def test_layer_ranges_are_slices_of_the_depth_by_hand():
    late = expand_layer_ranges("blocks.{1/2:}.hook_attn_out", 30)
    assert late == [f"blocks.{layer}.hook_attn_out" for layer in range(15, 30)]
    assert expand_layer_ranges("blocks.{0.5:}.hook_attn_out", 18) == [f"blocks.{layer}.hook_attn_out" for layer in range(9, 18)]
    assert expand_layer_ranges("blocks.{2/3:}.x", 30) == [f"blocks.{layer}.x" for layer in range(20, 30)]  # floor(20.0)
    assert expand_layer_ranges("blocks.{1/3:2/3}.x", 10) == ["blocks.3.x", "blocks.4.x", "blocks.5.x"]  # 3.33 -> 3, 6.67 -> 6
    assert expand_layer_ranges("blocks.{:2}.x", 30) == ["blocks.0.x", "blocks.1.x"]
    assert expand_layer_ranges("blocks.{-2:}.x", 30) == ["blocks.28.x", "blocks.29.x"]
    assert expand_layer_ranges("blocks.*.x", 30) == ["blocks.*.x"]


@pytest.mark.parametrize("pattern, message", [("blocks.{half:}.x", "neither a block index"),
                                              ("blocks.{3/2:}.x", "outside"), ("blocks.{5:}.x", "names no block"),
                                              ("blocks.{1/2}.x", "written {START:END}")])
def test_bad_layer_ranges_are_refused(pattern, message):
    with pytest.raises(ValueError, match=message):
        expand_layer_ranges(pattern, 4)


def test_layer_range_resolves_on_a_model(tiny):
    assert resolve_hook_names(tiny, "blocks.{1/2:}.hook_attn_out") == ["blocks.1.hook_attn_out"]
    both = resolve_hook_names(tiny, "blocks.{:1}.hook_attn_out, hook_post")  # in layer order, as without a range
    assert both == resolve_hook_names(tiny, "blocks.0.hook_attn_out, hook_post")
    assert sorted(both) == ["blocks.0.hook_attn_out", "blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
