"""What distill.py needs around its loop: its sequences' lengths checked before the model loads, and what fits one
GPU: the training dtypes, the optimizer, the memory plan.

On CUDA distill.py keeps bf16 weights and trains them with torchao's 8-bit AdamW with stochastic rounding
(`--optimizer adamw8bit`); on a CPU, fp32 weights and torch's AdamW. Before the first step it prints a plan
of its peak memory, term by term, made from the model config and the settings alone; after the run, the
measured peak. `python bench/distill_step.py --shape qwen3-4b --plan-only` prints the plan of a shape without
downloading anything.
"""

import importlib.util
import resource
import warnings

import torch

from oel import experience, lm
from oel.cli import InputError

# ----------------------------------------------------------------------------- sequence lengths


def plan_lengths(tokenizer, prompts, pool, thinking, marker_ids):
    """Before the model loads: (longest teacher prompt in tokens, its prompt id, its knowledge id,
    longest student prompt in tokens).

    Every prompt is rendered without and with a pool entry, and every entry with one prompt (experience.pair_prompts
    checks each; every student prompt must end with the marker's ids). Tokens add up almost exactly (a
    prompt with knowledge k is as long as without it plus k's block, give or take a token where they meet),
    so only the prompts within 64 tokens of the longest are tokenized with the entries within 64 tokens of
    the longest. Each step still checks its own sequences exactly.
    """
    tokenize = lambda texts: tokenizer(texts, add_special_tokens=False).input_ids
    block = lambda k: experience.insert_knowledge([{"role": "user", "content": ""}], k)[0]["content"]  # what k adds
    blocks = [len(ids) for ids in tokenize([block(k) for _, k in pool])]
    students = tokenize([experience.pair_prompts(tokenizer, m, pool[0][1], thinking, pid)[0] for pid, m in prompts])
    for (pid, _), ids in zip(prompts, students):
        if ids[-len(marker_ids) :] != marker_ids:
            raise InputError(f"{pid}: the rendered prompt does not end with the assistant marker's tokens")
    for kid, k in pool:
        experience.pair_prompts(tokenizer, prompts[0][1], k, thinking, f"{prompts[0][0]} with knowledge {kid}")
    longest = max(map(len, students))
    long_prompts = [p for p, ids in zip(prompts, students) if len(ids) >= longest - 64]
    long_entries = [e for e, n in zip(pool, blocks) if n >= max(blocks) - 64]
    candidates = [(pid, m, kid, k) for pid, m in long_prompts for kid, k in long_entries]
    texts = [
        experience.pair_prompts(tokenizer, m, k, thinking, f"{pid} with knowledge {kid}")[1]
        for pid, m, kid, k in candidates
    ]
    lengths = [len(ids) for ids in tokenize(texts)]
    best = max(range(len(candidates)), key=lengths.__getitem__)
    return lengths[best], candidates[best][0], candidates[best][2], longest


def check_lengths(tokenizer, prompts, pool, marker_ids, *, thinking, max_new_tokens, max_seq_len, model_path):
    """distill.py's sequences, before the model loads: (the sequence length limit, derived from the longest
    teacher prompt or checked against --max-seq-len, and against the model's window; (longest student prompt,
    longest teacher prompt) in tokens)."""
    from transformers import AutoConfig

    longest, pid, kid, student_longest = plan_lengths(tokenizer, prompts, pool, thinking, marker_ids)
    need, limit = longest + max_new_tokens, max_seq_len or longest + max_new_tokens
    where = f"the longest teacher prompt ({pid} with knowledge {kid}) has {longest} tokens"
    window = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None) or need
    if limit < need or need > window:
        too_small = f"--max-seq-len {limit} is too small" if limit < need else f"the model's window is {window}"
        raise InputError(f"{too_small}: {where}, + --max-new-tokens {max_new_tokens} = {need}")
    print(f"distill | {len(prompts)} prompts x {len(pool)} knowledge entries | {where} | limit {limit}")
    return limit, (student_longest, longest)


# ----------------------------------------------------------------------------- dtypes, optimizer, memory


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def training_dtypes(device, optimizer):
    """(weights dtype, compute dtype). adamw keeps fp32 master weights and computes under bf16 autocast on a
    GPU; adamw8bit keeps the weights in the compute dtype, so the KV cache of sampling is bf16 too."""
    device, compute_dtype = lm.pick_device(device)
    return (torch.float32 if optimizer == "adamw" else compute_dtype), compute_dtype


def training_choices(device, optimizer=None, checkpointing=None):
    """(optimizer name, gradient checkpointing): what was asked, else the device's default (adamw8bit and
    checkpointing on CUDA, adamw without checkpointing elsewhere); adamw8bit needs torchao."""
    optimizer = optimizer or ("adamw8bit" if device.type == "cuda" else "adamw")
    if optimizer == "adamw8bit" and importlib.util.find_spec("torchao") is None:
        raise InputError("--optimizer adamw8bit needs torchao (pip install -r requirements.txt)")
    return optimizer, device.type == "cuda" if checkpointing is None else checkpointing


def make_optimizer(params, name, lr, weight_decay):
    """AdamW, betas (0.9, 0.999), from a library. adamw: torch's fused kernel (no full-size temporaries).
    adamw8bit: torchao's, both moments in 8 bits with a scale per block of 256; on bf16 weights with stochastic
    rounding, so that an update far below bf16's resolution (lr 1e-6 on a weight ~1e-2, whose bf16 step is
    ~1e-4) lands with the right probability instead of always being rounded away."""
    params = list(params)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, fused=True)
    from torchao.optim import AdamW8bit  # imported here: only this choice needs torchao (it compiles its step)

    # torchao's note to itself that its 8-bit state cannot key torch.compile's on-disk cache: not ours to act on
    warnings.filterwarnings("ignore", message="OptimState8bit does not implement _stable_hash_for_caching")

    bf16 = any(p.dtype == torch.bfloat16 for p in params)
    return AdamW8bit(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, bf16_stochastic_round=bf16)


def count_params(config):
    """Parameters of the model a config describes, counted on the meta device (no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def plan_memory(
    config,
    n_params,
    batch_size,
    prompt_tokens,
    teacher_prompt_tokens,
    new_tokens,
    weight_bytes,
    optimizer,
    checkpointing,
    micro_batch_tokens,
    chunk,
    autocast_bytes=0,
    teacher_copy=True,
):
    """Planned peak memory in bytes, term by term, for one step of distill.main: the static terms, then
    three phases that never overlap (sampling, the forward/backward of the largest micro-batch, the optimizer
    step), peak = static + the largest phase. Worst case: every prompt as long as the longest.
    Activations take the weights' dtype (under autocast fp32 weights keep an fp32 residual stream and
    norms); per token and layer a Qwen3/Llama block keeps about 6H + 4M + 4(q + kv) numbers for its
    backward pass (M: MLP width; measured with saved-tensor hooks), and bf16 RMSNorms keep fp32 copies
    of their inputs (~2H fp32)."""
    H, L, M, V = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    head_dim = getattr(config, "head_dim", None) or H // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    b = weight_bytes
    layer = (6 * H + 4 * M + 4 * q + 4 * kv) * b + (8 * H if b < 4 else 0)  # bytes per token and layer
    transient = (3 * M + 4 * H) * b  # a no-grad forward frees each layer's intermediates: one layer's MLP lives
    s_len, t_len = prompt_tokens + new_tokens, teacher_prompt_tokens + new_tokens
    pairs = min(batch_size, max(1, micro_batch_tokens // (s_len + t_len)))  # distill.micro_batches packs them
    if checkpointing:  # each layer's input is kept; one layer at a time is recomputed in the backward pass
        activations = pairs * s_len * (L * H * b + layer)
    else:
        activations = pairs * s_len * L * layer
    return {
        "static": {
            "student weights": n_params * b,
            "teacher weights": n_params * b if teacher_copy else 0,
            "optimizer states": n_params * (8 if optimizer == "adamw" else 2 * (1 + 4 / 256)),
            # autocast keeps a bf16 copy of each fp32 weight that requires grad (the student's) while it runs
            "autocast weight cache": n_params * autocast_bytes,
        },
        "sampling": {  # generate's cache holds K and V of every layer for the whole batch, in the weights' dtype
            "KV cache": batch_size * s_len * L * 2 * kv * b,
            "prefill": batch_size * prompt_tokens * transient,
        },
        "training": {
            "gradients": n_params * b,
            "activations": activations + pairs * s_len * (2 * H + 2 * head_dim) * b,
            "teacher forward": pairs * t_len * transient,
            # distill.teacher_states runs the teacher before the student's micro-batches: its states at every
            # response position of the batch live through them; a shared prefix's keys and values (at most a
            # teacher prompt's) live while the sequences that share it run
            "teacher states": batch_size * new_tokens * H * b,
            "teacher prefix KV": teacher_prompt_tokens * L * 2 * kv * b,
            "logits chunks": 8 * chunk * V * 4,  # fp32 logits, log-softmaxes, p and grads of both models
            "output layer gradient": V * H * b,  # each chunk's (V, H) weight gradient, before it is accumulated
        },
        "optimizer step": {  # fused steps; torchao's is compiled per tensor: an fp32 copy of the largest one
            "gradients": n_params * b,
            "temporaries": 0 if optimizer == "adamw" else V * H * 4,
        },
    }


def plan_run(config, n_params, lengths, *, weight_bytes, compute_bytes, teacher_copy=True, **settings):
    """distill.py's memory plan at its longest prompts, lengths = (student, teacher) prompt tokens: the one place
    where a run's settings (batch_size, new_tokens, optimizer, checkpointing, micro_batch_tokens, chunk) and its
    numerics become plan_memory's terms. Weights wider than the compute dtype run under autocast, whose bf16
    copies the plan counts. bench/distill_step.py plans its shapes through it too."""
    return plan_memory(
        config, n_params, prompt_tokens=lengths[0], teacher_prompt_tokens=lengths[1], weight_bytes=weight_bytes,
        autocast_bytes=compute_bytes if compute_bytes < weight_bytes else 0, teacher_copy=teacher_copy, **settings,
    )  # fmt: skip


def phase_bytes(plan):
    """Bytes of each phase on top of the static terms; the teacher's forward and the logits chunks come one
    after the other, never together."""
    t = plan["training"]
    return {
        "sampling": sum(plan["sampling"].values()),
        "training": t["gradients"]
        + t["activations"]
        + t["teacher states"]
        + max(t["teacher forward"] + t["teacher prefix KV"], t["logits chunks"] + t["output layer gradient"]),
        "optimizer step": sum(plan["optimizer step"].values()),
    }


def planned_peak(plan):
    """(bytes, phase): the static terms plus the largest phase."""
    phases = phase_bytes(plan)
    phase = max(phases, key=phases.get)
    return sum(plan["static"].values()) + phases[phase], phase


def device_capacity(device):
    """Total memory of a CUDA device (None elsewhere: a CPU process shares the machine)."""
    return torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None


def format_peak(plan, device):
    """The planned peak next to the measured one (CUDA: peak allocated; CPU: the process's peak RSS, which also
    holds Python, torch and the tokenizer)."""
    what = "CUDA peak allocated" if device.type == "cuda" else "process peak RSS"
    measured = peak_memory_mb(device) * 2**20
    return f"memory | planned peak {planned_peak(plan)[0] / 2**30:.2f} GiB | measured {what} {measured / 2**30:.2f} GiB"


def format_plan(plan, capacity=None):
    """A few lines: every term, each phase's total and the planned peak, in GiB."""
    (peak, phase), phases = planned_peak(plan), phase_bytes(plan)
    unit, size = ("GiB", 2**30) if peak >= 2**30 else ("MiB", 2**20)
    lines = [f"memory plan ({unit})"]
    for name, terms in plan.items():
        total = sum(terms.values()) if name == "static" else phases[name]
        lines.append(f"  {name} {total / size:.2f}: " + ", ".join(f"{k} {v / size:.2f}" for k, v in terms.items()))
    fits = "" if not capacity else f" of {capacity / size:.1f} {unit}" + (", DOES NOT FIT" if peak > capacity else "")
    return "\n".join(lines + [f"  planned peak {peak / size:.2f} {unit} (static + {phase}){fits}"])
