"""Where TransformerLens' two model classes differ, and nowhere else: loading, hook spellings, running a batch block
by block, the final normalised residual, and KV-cached decoding.

- `hooked`: `HookedTransformer` (TransformerLens 3; removed in 4.0). Weights converted to TransformerLens' own
  layout (LayerNorm folded), its own attention and `TransformerLensKeyValueCache`.
- `bridge`: `TransformerBridge` (TransformerLens 3.9 and 4.x). The Hugging Face model itself with hook points
  wrapped around its modules: HF attention, HF cache, HF numerics.

Everything above this module (responses, methods, gates, calibration, generation, lm-eval, the CLI) calls the
same TransformerLens API on both (`HookPoint`s, `cfg`, `model(tokens, stop_at_layer=...)`), adds hooks through
`hooks_applied` (the same as `model.hooks`, without the bridge's per-call cost), and asks `backend_of(model)` for
the few things that API does not give alike.
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from aura_tl.prompt_scope import prompt_marked

BACKENDS = ("hooked", "bridge")
BACKEND_ENV = "AURA_TL_BACKEND"
BACKEND_HELP = ("hooked (HookedTransformer, TransformerLens 3) or bridge (TransformerBridge, TransformerLens 3.9+ "
                f"and 4); default: ${BACKEND_ENV}, else hooked where TransformerLens still has it")
# TransformerLens 4 spellings of hooks every architecture has -> the TransformerLens 3 names users know (the bridge
# reads its own alias table; this one lets a HookedTransformer accept the same spellings)
CANONICAL_BLOCK_HOOKS = {
    "hook_in": "hook_resid_pre", "hook_out": "hook_resid_post", "ln2.hook_in": "hook_resid_mid",
    "attn.hook_out": "hook_attn_out", "mlp.hook_out": "hook_mlp_out", "attn.o.hook_in": "attn.hook_z",
    "mlp.out.hook_in": "mlp.hook_post",
}


def hooked_transformer_available() -> bool:
    """Whether this TransformerLens still ships `HookedTransformer` (3.x does, 4.0 removed it)."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def default_backend() -> str:
    """`$AURA_TL_BACKEND` when set, else `hooked` where TransformerLens has it and `bridge` where it does not."""
    return check_backend(os.environ.get(BACKEND_ENV) or ("hooked" if hooked_transformer_available() else "bridge"))


def evaluation_backend(name: str | None = None) -> str:
    """The backend lm-eval's `aura-hooked` runs when none is named: `$AURA_TL_BACKEND`, else `bridge` on every
    TransformerLens (its model object never reaches the user, and it generates at HF speed: ~0.3x a
    HookedTransformer's time, `bench/backends.py`), whatever `load_model`'s default is."""
    return check_backend(name or os.environ.get(BACKEND_ENV) or "bridge")


def check_backend(name: str | None) -> str:
    """`name` when this TransformerLens can run it (None: the default); a clear error otherwise."""
    if name is None:
        return default_backend()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    if name == "hooked" and not hooked_transformer_available():
        import transformer_lens

        version = getattr(transformer_lens, "__version__", "4.x")
        raise ValueError(f"backend 'hooked' needs HookedTransformer, which TransformerLens {version} no longer has: "
                         "use backend=bridge (the default there), or pip install 'transformer-lens>=3.9,<4'")
    return name


def backend_of(model) -> "Backend":
    """The backend that runs `model` (a `TransformerBridge` or a `HookedTransformer`)."""
    from transformer_lens.model_bridge import TransformerBridge

    return BRIDGE if isinstance(model, TransformerBridge) else HOOKED


def get_backend(name: str | None = None) -> "Backend":
    return {"hooked": HOOKED, "bridge": BRIDGE}[check_backend(name)]


def hook_point(model, name: str):
    """The `HookPoint` a hook name (any spelling) refers to, from a table read once per model: a bridge rebuilds its
    `hook_dict` (every alias resolved, ~20 ms for SmolLM2) on each read, and `model.hooks` reads it once per hook.
    The first time a name is used, the model's own `add_hook` checks it, so TransformerLens' refusals stand (e.g.
    `attn.hook_result` before `set_use_attn_result(True)`: a hook that would never fire), on both classes."""
    points = model.__dict__.get("_aura_tl_hook_points")
    if points is None or name not in points:
        points = dict(model.hook_dict)
        model.__dict__["_aura_tl_hook_points"] = points
    name = name if name in points else backend_of(model).user_name(model, name)
    if name not in points:
        raise ValueError(f"{model.cfg.model_name} has no hook point {name!r}")
    checked: set = model.__dict__.setdefault("_aura_tl_checked_hooks", set())
    if name not in checked:
        try:
            model.add_hook(name, _no_op)  # TransformerLens' own checks
        except AssertionError as error:  # HookedTransformer asserts where the bridge raises
            raise ValueError(str(error)) from None
        finally:
            remove_hook_fn(points[name], _no_op)
        checked.add(name)
    return points[name]


def _no_op(activation, hook) -> None:
    return None


def remove_hook_fn(point, fn: Callable) -> None:
    """Take exactly the hooks running `fn` off a hook point, leaving every other hook (the user's) in place."""
    keep = []
    for handle in point.fwd_hooks:
        if handle.user_hook is fn:
            handle.hook.remove()
        else:
            keep.append(handle)
    point.fwd_hooks = keep


_LEVELS = itertools.count(1 << 20)  # hook context levels of our own, apart from TransformerLens' small counters


@contextmanager
def hooks_applied(model, fwd_hooks: Sequence[tuple[str, Callable]]) -> Iterator:
    """`model.hooks(fwd_hooks=...)` for either model class, at the cost of adding the hooks: they go on their hook
    points at a context level of their own and exactly they are removed on exit, even on error."""
    level, points = next(_LEVELS), []
    try:
        for name, fn in fwd_hooks:
            point = hook_point(model, name)
            point.add_hook(fn, dir="fwd", level=level)
            points.append(point)
        yield model
    finally:
        for point in {id(p): p for p in points}.values():
            point.remove_hooks("fwd", including_permanent=False, level=level)


class LayerRunner(ABC):
    """One batch run block by block, for causal estimation: `carry_to(layer)` brings the residual to the input of
    `layer` (each block in between runs once, with the hooks active now), `run(layer)` runs that block once more
    from it (its output is dropped: hooks read what it computes). About two block passes per hooked layer
    (`HookedTransformer`) or three (bridge: one more to record each block's arguments), whatever the depth."""

    def __init__(self, model, tokens: Int[Tensor, "b p"], attention_mask: Int[Tensor, "b p"], last_layer: int):
        self.model, self.tokens, self.mask, self.last_layer = model, tokens, attention_mask, last_layer
        self.residual: Tensor | None = None
        self.at = 0  # the block whose input `residual` holds

    @abstractmethod
    def carry_to(self, layer: int) -> None: ...

    @abstractmethod
    def run(self, layer: int) -> None: ...


class Decoder(ABC):
    """KV-cached decoding of one left-padded batch: `prefill` the prompts, then `step` one token per row; each
    returns the next-token logits [batch, vocab]. The model's active hooks apply at every position."""

    def __init__(self, model) -> None:
        self.model = model

    @abstractmethod
    def prefill(self, tokens: Int[Tensor, "b p"], attention_mask: Int[Tensor, "b p"]) -> Float[Tensor, "b v"]: ...

    @abstractmethod
    def step(self, tokens: Int[Tensor, "b 1"]) -> Float[Tensor, "b v"]: ...


class Backend(ABC):
    """What differs between the two model classes; one instance per backend (`HOOKED`, `BRIDGE`)."""

    name: str

    @abstractmethod
    def load_folder(self, folder: Path, *, device: str, dtype: torch.dtype, n_ctx: int, n_devices: int): ...

    @abstractmethod
    def load_named(self, name: str, *, device: str, dtype: torch.dtype, n_ctx: int | None, n_devices: int): ...

    @abstractmethod
    def spellings(self, model) -> dict[str, str]:
        """Every other spelling of a hook this model accepts -> the TransformerLens 3 name files and users use."""

    def hook_names(self, model) -> list[str]:
        """The model's hook names, each once, as users spell them (`blocks.3.mlp.hook_post`), in model order."""
        other = self.spellings(model)
        return [name for name in model.hook_dict if name not in other]

    def user_name(self, model, name: str) -> str:
        """The one spelling of hook `name` (a canonical TransformerLens 4 name becomes its TransformerLens 3 alias)."""
        return self.spellings(model).get(name, name)

    @abstractmethod
    def run_through(self, model, tokens: Int[Tensor, "b p"], attention_mask: Int[Tensor, "b p"] | None,
                    last_layer: int | None) -> None:
        """Run blocks 0..`last_layer` (None: the whole model) so that their hooks fire, and never the unembedding of
        every position (on Gemma-3 that is most of a forward's work)."""

    @abstractmethod
    def layer_runner(self, model, tokens, attention_mask, last_layer: int) -> LayerRunner: ...

    @abstractmethod
    def final_normalized(self, model, tokens: Int[Tensor, "b p"]) -> Float[Tensor, "b p d"]:
        """The residual after the last block and the final norm: what the unembedding reads at each position."""

    @abstractmethod
    def unembed(self, model, normalized: Float[Tensor, "n d"]) -> Float[Tensor, "n v"]: ...

    @abstractmethod
    def decoder(self, model) -> Decoder: ...


def _softcap(logits: Tensor, cap: float | None) -> Tensor:
    """`cap * tanh(logits / cap)` where the model caps its logits (Gemma 2), as its own forward does."""
    return cap * torch.tanh(logits / cap) if cap and cap > 0 else logits


# --- HookedTransformer ----------------------------------------------------------------------------------------------

def _hooked_final_norm(model, residual: Tensor) -> Tensor:
    """The residual after a HookedTransformer's final norm (none where the model has none): what it unembeds."""
    return model.ln_final(residual) if model.cfg.normalization_type is not None else residual


class HookedLayerRunner(LayerRunner):
    def carry_to(self, layer: int) -> None:
        if self.residual is None:
            self.residual = self.model(self.tokens, attention_mask=self.mask, stop_at_layer=layer)
        elif self.at < layer:
            self.residual = self.model(self.residual, start_at_layer=self.at, stop_at_layer=layer,
                                       attention_mask=self.mask)
        self.at = layer

    def run(self, layer: int) -> None:
        self.model(self.residual, start_at_layer=layer, stop_at_layer=layer + 1, attention_mask=self.mask)


class HookedDecoder(Decoder):
    def prefill(self, tokens, attention_mask):
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        cfg = self.model.cfg
        self.cache = TransformerLensKeyValueCache.init_cache(cfg, cfg.device, tokens.shape[0])
        residual = self.model(tokens, attention_mask=attention_mask, past_kv_cache=self.cache,
                              stop_at_layer=cfg.n_layers)  # every block; the unembedding on the last position only
        return HOOKED.unembed(self.model, _hooked_final_norm(self.model, residual[:, -1]))

    def step(self, tokens):
        return self.model(tokens, attention_mask=torch.ones_like(tokens), past_kv_cache=self.cache)[:, -1]


# HookedTransformer configures these families from the official model name alone (never from a folder's config)
NAME_CONFIGURED_FAMILIES = ("gemma",)


def official_name_for(hf_config) -> str | None:
    """For a local folder of a family HookedTransformer configures by official name only (Gemma: local/global
    attention, post-norms, query scaling are in its name-keyed table), the official name whose configuration has
    the folder's shape (layers, widths, heads, vocabulary); None for every other folder (read from its config).
    Without it a Gemma folder is refused, or, if its path happens to contain 'gemma', configured as Gemma 1."""
    from transformer_lens import loading

    family = str(getattr(hf_config, "model_type", "")).lower()
    if not family.startswith(NAME_CONFIGURED_FAMILIES):
        return None
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    shape = (text.num_hidden_layers, text.hidden_size, text.intermediate_size, text.num_attention_heads,
             text.vocab_size)
    for name in loading.OFFICIAL_MODEL_NAMES:
        if not name.lower().startswith(f"google/{family.split('_')[0].replace('gemma', 'gemma-')}"):
            continue
        cfg = loading.convert_hf_model_config(name)  # name-keyed for these families: nothing is fetched
        if (cfg["n_layers"], cfg["d_model"], cfg["d_mlp"], cfg["n_heads"], cfg["d_vocab"]) == shape:
            return name
    raise ValueError(f"HookedTransformer configures {family} models by official name, and none of TransformerLens' "
                     f"has this folder's shape (layers, d_model, d_mlp, heads, vocabulary) {shape}: use "
                     "backend=bridge, which reads the folder's own config")


class HookedBackend(Backend):
    name = "hooked"

    def load_folder(self, folder, *, device, dtype, n_ctx, n_devices):
        from transformer_lens import HookedTransformer, loading
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        source = official_name_for(hf_model.config) or str(folder)
        cfg = loading.get_pretrained_model_config(source, hf_cfg=hf_model.config.to_dict(), n_ctx=n_ctx,
                                                  device=device, dtype=dtype, n_devices=n_devices)
        state_dict = loading.get_pretrained_state_dict(source, cfg, hf_model, dtype=dtype)
        del hf_model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TL 3.9 warns on every HookedTransformer build
            model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        model.load_and_process_state_dict(state_dict, fold_ln=True, center_writing_weights=False,
                                          center_unembed=False, fold_value_biases=True)
        model._aura_tl_hf_tokenizer = tokenizer  # the unmodified HF tokenizer (see models.hf_tokenizer)
        if n_devices > 1:
            model.move_model_modules_to_device()  # blocks spread over cuda:0..n_devices-1
            return model
        return model.to(device)

    def load_named(self, name, *, device, dtype, n_ctx, n_devices):
        from transformer_lens import HookedTransformer

        kwargs: dict[str, Any] = {"device": device, "dtype": dtype, "n_devices": n_devices}
        if n_ctx:
            kwargs["n_ctx"] = n_ctx
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return HookedTransformer.from_pretrained(name, **kwargs)

    def spellings(self, model):
        memo = model.__dict__.get("_aura_tl_spellings")
        if memo is None:
            memo = {}
            for name in model.hook_dict:
                match = re.match(r"(blocks\.\d+\.)(.+)$", name)
                if match:
                    for canonical, legacy in CANONICAL_BLOCK_HOOKS.items():
                        if match.group(2) == legacy:
                            memo[match.group(1) + canonical] = name
            model.__dict__["_aura_tl_spellings"] = memo
        return memo

    def hook_names(self, model):
        return list(model.hook_dict)  # the canonical spellings are accepted, never listed: they are not hook points

    def run_through(self, model, tokens, attention_mask, last_layer):
        stop = None if last_layer is None else last_layer + 1  # past the last block: the residual, not the norm
        model(tokens, attention_mask=attention_mask, return_type=None, stop_at_layer=stop)  # None: no unembedding

    def layer_runner(self, model, tokens, attention_mask, last_layer):
        return HookedLayerRunner(model, tokens, attention_mask, last_layer)

    def final_normalized(self, model, tokens):
        return _hooked_final_norm(model, model(tokens, stop_at_layer=model.cfg.n_layers))

    def unembed(self, model, normalized):
        return _softcap(model.unembed(normalized[None])[0], model.cfg.output_logits_soft_cap)

    def decoder(self, model):
        return HookedDecoder(model)


# --- TransformerBridge ----------------------------------------------------------------------------------------------

def _first(output):
    """A block's hidden states, whether the HF layer returns a tensor or a tuple (transformers versions differ)."""
    return output[0] if isinstance(output, tuple) else output


class BridgeLayerRunner(LayerRunner):
    """The bridge delegates the layer loop to Hugging Face, so it cannot start at a block cheaply (TransformerLens
    3.9 refuses `start_at_layer`; 4.x reruns every earlier block). Instead the first pass records the arguments HF
    gives each block (attention mask, rotary embeddings, per-layer-type masks) up to the last hooked layer, and
    later blocks are called directly with them: each block's hook points fire as in a full pass, and the residual
    equals the full pass's exactly."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.block_kwargs: dict[int, dict] = {}

    def _record_pass(self, layer: int) -> None:
        blocks, captured = self.model.blocks, {}

        def record(index):
            def pre_hook(module, args, kwargs):
                self.block_kwargs[index] = {**kwargs, "past_key_values": None, "use_cache": False}
            return pre_hook

        def keep(activation, hook):
            captured["residual"] = activation

        handles = [blocks[i].register_forward_pre_hook(record(i), with_kwargs=True)
                   for i in range(self.last_layer + 1)]
        try:
            with hooks_applied(self.model, [(f"blocks.{layer}.hook_resid_pre", keep)]):
                BRIDGE.run_through(self.model, self.tokens, self.mask, self.last_layer)
        finally:
            for handle in handles:
                handle.remove()
        self.residual = captured["residual"]

    def _block(self, layer: int, residual: Tensor) -> Tensor:
        return _first(self.model.blocks[layer](residual, **self.block_kwargs[layer]))

    def carry_to(self, layer: int) -> None:
        if self.residual is None:
            self._record_pass(layer)
        else:
            for index in range(self.at, layer):
                self.residual = self._block(index, self.residual)
        self.at = layer

    def run(self, layer: int) -> None:
        self._block(layer, self.residual)


class BridgeDecoder(Decoder):
    """Hugging Face's own cache through the bridge's forward (which derives position ids from the mask, so left
    padding is handled as `generate` handles it); only the last position is unembedded."""

    def prefill(self, tokens, attention_mask):
        check_kv_cache(self.model)
        self.mask = attention_mask
        logits, self.cache = self.model(tokens, attention_mask=attention_mask, use_cache=True,
                                        return_type="logits_and_cache", logits_to_keep=1)
        return logits[:, -1]

    def step(self, tokens):
        self.mask = torch.cat([self.mask, torch.ones_like(tokens)], dim=1)
        logits, self.cache = self.model(tokens, attention_mask=self.mask, past_key_values=self.cache, use_cache=True,
                                        return_type="logits_and_cache", logits_to_keep=1)
        return logits[:, -1]


def check_kv_cache(model, tolerance: float = 1e-3) -> None:
    """Once per model: the next-token logits from the bridge's KV cache equal a full pass's. transformers 5.24
    renamed the cache argument the bridge passes, so its cache silently stays empty and generation repeats one
    token; this turns that into an error before any text is generated."""
    if model.__dict__.get("_aura_tl_kv_cache_ok"):
        return
    import transformers

    tokens = torch.tensor([[1, 2, 3, 4]], device=model.cfg.device) % model.cfg.d_vocab
    with torch.inference_mode(), prompt_marked(None):  # its own forwards, whatever prefill it runs inside
        full = model(tokens, use_cache=False)[:, -1]
        _, cache = model(tokens[:, :-1], use_cache=True, return_type="logits_and_cache")
        stepped, _ = model(tokens[:, -1:], attention_mask=torch.ones_like(tokens), past_key_values=cache,
                           use_cache=True, return_type="logits_and_cache")
    gap = float((stepped[:, -1] - full).abs().max())
    if not gap <= tolerance * max(1.0, float(full.abs().max())):
        raise RuntimeError(
            f"the TransformerBridge's KV cache gives wrong logits with transformers {transformers.__version__} "
            f"(a cached step differs from a full pass by {gap:.3g}): generation would be wrong. transformers 5.24 "
            "is known to break it; install one that works: pip install 'transformers==5.23.0'")
    model.__dict__["_aura_tl_kv_cache_ok"] = True


def use_fast_attention(model) -> int:
    """Let each block's attention run Hugging Face's own attention module (SDPA) whenever none of the hook points
    that only TransformerLens' re-implemented attention fires (`hook_attn_scores`, `hook_pattern`, `hook_rot_q/k`,
    `hook_cos/sin`, split inputs, per-head `hook_result`) holds a hook; the others (`hook_q/k/v`, `hook_z`,
    `hook_attn_out`) fire on both paths. The same numbers as the HF model at its speed (the re-implementation
    materialises every [query, key] score: 2.7x HF's time at 2,048 tokens); hook a pattern, or `run_with_cache`
    everything, and that block's attention is TransformerLens' again for that call. Returns how many blocks."""
    from transformer_lens.hook_points import HookPoint
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    configs = {id(m.config): m.config for m in model.original_model.modules()
               if hasattr(getattr(m, "config", None), "_attn_implementation")}
    for config in configs.values():
        config._attn_implementation = "sdpa"  # runtime dispatch in HF; the re-implementation reads the mask it gets
    installed = 0
    for block in model.blocks:
        attention = getattr(block, "attn", None)
        if not isinstance(attention, AttentionBridge) or type(attention).forward is AttentionBridge.forward:
            continue
        both = {id(attention.hook_in), id(attention.hook_out)}
        for part in ("q", "k", "v", "o"):
            if part in attention._modules:
                both |= {id(p) for p in attention._modules[part].modules() if isinstance(p, HookPoint)}
        only_reimplemented = [p for p in attention.modules() if isinstance(p, HookPoint) and id(p) not in both]
        attention.__dict__["forward"] = partial(  # through __dict__: the bridge hands a plain setattr on to HF's module
            _dispatch_attention, attention, type(attention).forward, AttentionBridge.forward, only_reimplemented)
        installed += 1
    return installed


def _dispatch_attention(attention, reimplemented, delegating, only_reimplemented, *args, **kwargs):
    if any(point.fwd_hooks or point.bwd_hooks for point in only_reimplemented):
        return reimplemented(attention, *args, **kwargs)
    return delegating(attention, *args, **kwargs)


class BridgeBackend(Backend):
    name = "bridge"

    def _boot(self, source: str, *, device, dtype, n_ctx, n_devices, **kwargs):
        from transformer_lens.model_bridge import TransformerBridge
        from transformers import AutoTokenizer

        if n_devices > 1:
            kwargs["n_devices"] = n_devices
        model = TransformerBridge.boot_transformers(source, device=device, dtype=dtype, n_ctx=n_ctx, **kwargs)
        # plain forwards build no KV cache (the decoder asks for one); HF's default would build one every call
        model.original_model.config.use_cache = False
        use_fast_attention(model)
        model._aura_tl_hf_tokenizer = AutoTokenizer.from_pretrained(source)  # unmodified (the bridge's adds BOS)
        return model

    def load_folder(self, folder, *, device, dtype, n_ctx, n_devices):
        return self._boot(str(folder), device=device, dtype=dtype, n_ctx=n_ctx, n_devices=n_devices)

    def load_named(self, name, *, device, dtype, n_ctx, n_devices):
        return self._boot(name, device=device, dtype=dtype, n_ctx=n_ctx, n_devices=n_devices)

    def spellings(self, model):
        memo = model.__dict__.get("_aura_tl_spellings")
        if memo is None:
            # an alias's HookPoint carries its canonical name: canonical -> alias (the TransformerLens 3 name)
            memo = {point.name: name for name, point in model.hook_dict.items() if point.name != name}
            model.__dict__["_aura_tl_spellings"] = memo
        return memo

    @staticmethod
    def stop_at(model, last_layer: int | None) -> int | None:
        """The bridge's `stop_at_layer` for running through `last_layer`: it stops by raising at the input of that
        block, and past the last block there is none, so there the forward runs on to Hugging Face's head (None)."""
        return last_layer + 1 if last_layer is not None and last_layer + 1 < model.cfg.n_layers else None

    def run_through(self, model, tokens, attention_mask, last_layer):
        model(tokens, attention_mask=attention_mask, return_type=None, stop_at_layer=self.stop_at(model, last_layer),
              use_cache=False, logits_to_keep=1)  # where the head runs, it unembeds the last position only

    def layer_runner(self, model, tokens, attention_mask, last_layer):
        return BridgeLayerRunner(model, tokens, attention_mask, last_layer)

    def final_normalized(self, model, tokens):
        captured = {}

        def keep(activation, hook):
            captured["normalized"] = activation

        with hooks_applied(model, [("ln_final.hook_out", keep)]):
            model(tokens, use_cache=False, logits_to_keep=1)  # the unembedding runs on one position only
        return captured["normalized"]

    def unembed(self, model, normalized):
        return _softcap(model.unembed(normalized), getattr(model.original_model.config, "final_logit_softcapping", None))

    def decoder(self, model):
        return BridgeDecoder(model)


HOOKED = HookedBackend()
BRIDGE = BridgeBackend()
