"""`aura-hooked`: an lm-eval model backed by a TransformerLens model (`HookedTransformer` or `TransformerBridge`)
with an aura-tl intervention.

    lm_eval --model aura-hooked --model_args model=smollm2-135m,method=aura --tasks rtp_toxicity,piqa_local

Model args:
  model (alias pretrained)  TransformerLens name, local HF folder, .gguf file, or an embedded model: `smollm2-135m` (default), `gemma3-270m`
  intervention              a saved .safetensors intervention (then only `strength` and `steer_prompt` may be given
                            with it: `aura_tl.methods.base.APPLY_OPTIONS`), or
                            several joined by `+` (`act.safetensors+destein.safetensors`), applied together in that
                            order, each at the strength saved in it (`aura-tl learn --strength`)
  method                    a registered method (`aura-tl methods`), learned at start-up (default: the recommended
                            one, `aura_tl.methods.DEFAULT_METHOD`, with its own default options), or none (unsteered)
  cache                     true (default): reuse a learned intervention from the user cache dir when the model,
                            method, options, data and aura-tl version match (`aura_tl.cache`); false: always learn
  <method options>          that method's options, the same names as `aura-tl learn`'s flags (hooks `|`-separated);
                            an option the method does not have is an error, never silently ignored
  save_intervention         write the learned intervention here
  dtype, device             float32 (default) / bfloat16 / float16; cpu / cuda (default: cuda if available)
  batch_size                an int, or auto / auto:N (the CLI's --batch_size also reaches here)
  max_length, max_gen_toks  context length (default n_ctx) and default generation length (256)
  n_devices                 split the blocks over this many GPUs (TransformerLens' layer split; default 1)
  backend                   hooked or bridge (`aura_tl.backends`; default: $AURA_TL_BACKEND, else bridge: HF-speed
                            generation, the same numbers)

Scoring reuses lm-eval's `TemplateLM` (context/continuation encoding) and `Collator` (length-sorted batches,
one-token-continuation cache, per-gen-kwargs groups), so results equal lm-eval's `hf` model on the same weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    Collator,
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

from aura_tl.backends import backend_of, evaluation_backend
from aura_tl.generation import SamplingConfig, generate_ids, keep_end, prompt_budget, stop_checker
from aura_tl.methods import DEFAULT_METHOD, NO_METHOD
from aura_tl.methods.base import APPLY_OPTIONS
from aura_tl.models import (DEFAULT_MODEL, check_device, default_device, hf_tokenizer, load_model, pad_token_id,
                            start_token_id)
from aura_tl.options import parse_value
from aura_tl.prompt_scope import prompt_before, prompt_marked
from lm_eval_plugin.distributed import DataParallel

log = logging.getLogger(__name__)


def plan_intervention(path: str | None, method: str, options: dict, use_cache: bool = True):
    """Check the intervention args now and return `model -> (Intervention | None, description)` to run once the
    model is loaded: a file (only the apply-time options may come with it), a method learned (or read from the
    cache) with its options, or none."""
    from aura_tl.cache import learn_cached
    from aura_tl.intervention import Intervention, InterventionStack, apply_values
    from aura_tl.methods import get_method
    if "hooks" in options and options["hooks"] is not None:
        options = {**options, "hooks": str(options["hooks"]).replace("|", ",")}
    if path:
        extra = sorted(set(options) - set(APPLY_OPTIONS))
        if extra or method not in (None, "", NO_METHOD):
            raise ValueError(f"intervention={path} is a learned file: {extra or ['method']} cannot change it "
                             f"(only {', '.join(APPLY_OPTIONS)} can); drop them, or learn with method=... instead")
        given = apply_values(options)  # strength's range is the method's (checked when applied to the file)

        # a missing or unreadable file fails now, before the model loads
        paths = str(path).split("+")
        if len(paths) > 1:
            if "strength" in given:
                raise ValueError(f"intervention={path} stacks {len(paths)} files, each applied at the strength saved "
                                 "in it: drop strength= (learn each file with `aura-tl learn --strength` instead)")
            loaded = InterventionStack.load(paths)
            loaded = loaded.with_steer_prompt(given["steer_prompt"]) if "steer_prompt" in given else loaded
        else:
            loaded = Intervention.load(path).applied_as(given)

        def from_file(model):
            loaded.check_compatible(model)
            shown = loaded.strengths if isinstance(loaded, InterventionStack) else loaded.strength
            return loaded, {"method": loaded.method, "strength": shown, "file": str(path), "gated": loaded.gated}
        return from_file
    method = method or DEFAULT_METHOD  # the recommended intervention unless told otherwise
    if method == NO_METHOD:
        if options:
            raise ValueError(f"model args {sorted(options)} need a method (method=none steers nothing); "
                             f"unknown model args are not ignored")
        return lambda model: (None, {"method": NO_METHOD})

    parsed = get_method(method).options(**options)

    def learned(model):
        result = learn_cached(model, method, parsed, use_cache=use_cache)
        return result.intervention, result.describe()
    return learned


def describe_intervention(info: dict) -> str:
    """One line: `linact, lambda 1, data rtp-learn, hooks ..., cached at FILE (hit)`, or `none (unsteered)`."""
    if info.get("method") == NO_METHOD:
        return "none (unsteered)"
    strengths = info["strength"] if isinstance(info["strength"], list) else [info["strength"]]
    parts = [info["method"], "lambda " + "+".join(f"{s:g}" for s in strengths)]
    parts += [f"{k} {info[k]}" for k in ("data", "hooks", "file") if info.get(k)]
    if info.get("gated"):
        parts.append("gated (conditional steering)")
    if info.get("cache_file"):
        how = "read from the cache" if info["cache_hit"] else "learned and cached"
        parts.append(f"{how} at {info['cache_file']} ({info['seconds']:.1f} s)")
    elif "seconds" in info:
        parts.append(f"learned in {info['seconds']:.1f} s (cache off)")
    return ", ".join(parts)


class AuraHookedLM(TemplateLM):
    """lm-eval's three request types on a TransformerLens model, with the intervention's hooks on every position (with
    steer_prompt=false, from each context's last position on: `aura_tl.prompt_scope`)."""

    backend = "causal"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pretrained: str | None = None,
        intervention: str | None = None,
        method: str | None = None,
        cache: bool | str = True,
        save_intervention: str | None = None,
        dtype: str = "float32",
        device: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int = 64,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        n_devices: int | str = 1,
        backend: str | None = None,
        **method_options,
    ) -> None:
        super().__init__()
        use_cache = parse_value(bool, cache, "cache")
        if save_intervention and intervention:
            raise ValueError(f"save_intervention writes a learned intervention; intervention={intervention} is "
                             "already a file (copy it instead)")
        backend = evaluation_backend(backend)
        plan = plan_intervention(intervention, method, method_options, use_cache)  # bad args fail before the model loads
        self.parallel = DataParallel()
        self._rank, self._world_size = self.parallel.rank, self.parallel.world_size
        device = self.parallel.device or device or default_device()
        if device.startswith("cuda") and not torch.cuda.is_available():  # lm-eval's own default device is cuda
            log.warning("device %s asked for but CUDA is not available; using cpu", device)
            device = "cpu"
        check_device(device)
        self.model = load_model(pretrained or model, device=device, dtype=dtype, n_devices=int(n_devices),
                                backend=backend)
        self.tokenizer = hf_tokenizer(self.model)
        self._device = torch.device(device)
        self._max_length = int(max_length) if max_length else int(self.model.cfg.n_ctx)
        self.max_gen_toks = int(max_gen_toks)
        self.max_batch_size = int(max_batch_size)
        self.batch_size_arg = str(batch_size)
        self.intervention, self.intervention_info = plan(self.model)  # ranks learn together, sharded
        if self.intervention is not None:
            if save_intervention and self._rank == 0:
                self.intervention.save(save_intervention)
            self.intervention.attach(self.model)
        log.warning("aura-hooked intervention: %s", describe_intervention(self.intervention_info))
        self.batch_size = self._resolve_batch_size(self.batch_size_arg)

    # --- data parallel (lm-eval's evaluator splits requests by rank and gathers through these) ------------------
    def all_gather(self, tensor):
        return self.parallel.all_gather(tensor)

    def gather_object(self, obj, dst=0):
        return self.parallel.gather_object(obj, dst)

    def barrier(self) -> None:
        self.parallel.barrier()

    def get_model_info(self) -> dict:
        """Merged into the results JSON's `config` by lm-eval: which intervention ran, so results say what they measure."""
        return {"aura_tl_intervention": self.intervention_info}

    # --- set-up -------------------------------------------------------------------------------------------------
    def _resolve_batch_size(self, value: str) -> int:
        """An int, or `auto[:N]`: the largest power of two up to max_batch_size that fits a full-length batch."""
        if not value.startswith("auto"):
            return max(1, int(value))
        return self._detect_batch_size()

    def _detect_batch_size(self) -> int:
        cfg = self.model.cfg
        if self._device.type == "cpu":  # no OOM exception on CPU: budget a quarter of the free memory
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            per_row = self.max_length * (cfg.d_vocab * 4 * 3 + cfg.d_model * cfg.n_layers * 4 * 12)
            size = max(1, min(self.max_batch_size, int(free // 4 // per_row)))
            return 1 << (size.bit_length() - 1)
        size = self.max_batch_size
        while size > 1:
            try:
                tokens = torch.zeros((size, self.max_length), dtype=torch.long, device=self._device)
                with torch.inference_mode():
                    F.log_softmax(self.model(tokens), dim=-1)
                break
            except torch.cuda.OutOfMemoryError:
                size //= 2
            finally:
                torch.cuda.empty_cache()
        log.info("aura-hooked: batch_size auto -> %d", size)
        return size

    # --- what TemplateLM needs ----------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        return start_token_id(self.tokenizer)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self) -> torch.device:
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:
            bos = self.tokenizer.bos_token
            return self.tokenizer.encode(string, add_special_tokens=not (bos and string.startswith(bos)))
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)

    def tok_decode(self, tokens: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # --- scoring ------------------------------------------------------------------------------------------------
    def _continuation_logprobs(self, tokens: torch.Tensor, spans: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Log-probs [len, vocab] at the positions that predict each row's continuation (start, end exclusive).

        The blocks and the final norm run once on the whole batch; the unembedding runs only on the positions that
        are scored, which saves the [batch, pos, vocab] logits of every context token. The positions before each
        span are the row's context: an intervention with `steer_prompt=False` leaves them unsteered.
        """
        backend = backend_of(self.model)
        with prompt_marked(prompt_before([start for start, _ in spans], tokens.shape[1], tokens.device)):
            normalized = backend.final_normalized(self.model, tokens)
        picked = torch.cat([normalized[row, start:end] for row, (start, end) in enumerate(spans)])
        logits = backend.unembed(self.model, picked)
        logprobs = F.log_softmax(logits.float(), dim=-1)
        return list(logprobs.split([end - start for start, end in spans]))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        def sort_key(req):
            tokens = req[1] + req[2]
            return -len(tokens), tuple(tokens)

        reorder = Collator(requests, sort_fn=sort_key, group_by="contexts",
                           group_fn=lambda req: req[-2] + req[-1][:-1])
        results = []
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="aura-hooked loglikelihood")
        with torch.inference_mode():
            for chunk in reorder.get_batched(n=override_bs or self.batch_size):
                rows, spans = [], []
                for _, context, continuation in chunk:
                    window = (context + continuation)[-(self.max_length + 1):][:-1]
                    rows.append(window)
                    spans.append((len(window) - len(continuation), len(window)))
                width = max(len(r) for r in rows)
                pad = pad_token_id(self.tokenizer)
                tokens = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
                for (request, context, continuation), logprobs in zip(chunk, self._continuation_logprobs(tokens, spans)):
                    for request_str, cont, lp in reorder.get_cache(req_str=request, cxt_toks=context,
                                                                    cont_toks=continuation, logits=logprobs[None]):
                        target = torch.tensor(cont, device=self.device)
                        lp = lp[0, -len(cont):]
                        answer = (float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))
                        results.append(answer)
                        if request_str is not None:
                            self.cache_hook.add_partial("loglikelihood", request_str, answer)
                        bar.update(1)
        bar.close()
        return reorder.get_original(results)

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Sum of log-probs of whole texts in disjoint windows of max_length (lm-eval's own windowing)."""
        windows, owners = [], []
        for index, (text,) in enumerate(req.args for req in requests):
            pieces = get_rolling_token_windows(token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                                               max_seq_len=self.max_length, context_len=1)
            for window in map(make_disjoint_window, pieces):
                windows.append((None,) + window)
                owners.append(index)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, scores):
            totals[owner] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        reorder = Collator([req.args for req in requests], sort_fn=lambda r: (-len(self.tok_encode(r[0])), r[0]),
                           group_by="gen_kwargs", group_fn=lambda r: r[1])
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        results = []
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="aura-hooked generate")
        for chunk in reorder.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kwargs = normalize_gen_kwargs(all_kwargs[0], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            do_sample = bool(kwargs.get("do_sample", False)) and float(kwargs.get("temperature", 1.0) or 0) > 0
            config = SamplingConfig(
                max_new_tokens=max_gen_toks, do_sample=do_sample,
                temperature=float(kwargs.get("temperature") or 1.0) if do_sample else 1.0,
                top_p=float(kwargs.get("top_p") or 1.0), seed=kwargs.get("seed"),
            )
            max_context = prompt_budget(self.max_length, max_gen_toks)
            prompts = [keep_end(self.tok_encode(c), max_context) or [self.prefix_token_id]  # "" -> BOS
                       for c in contexts]

            new_ids = generate_ids(self.model, prompts, config, eos_token_ids=[self.eot_token_id],
                                   stop_check=stop_checker(self.tokenizer, until))
            for context, gen_kwargs, ids in zip(contexts, all_kwargs, new_ids):
                text = postprocess_generated_text(self.tok_decode(ids), stop=until, think_end_token=None)
                results.append(text)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                bar.update(1)
        bar.close()
        return reorder.get_original(results)
