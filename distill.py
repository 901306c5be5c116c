"""Stage 3 of the OEL loop: consolidate the knowledge into the weights by on-policy context distillation.

The student (the policy θ_{r-1}, trained) sees a turn prompt of a deployment trajectory with NO
knowledge; a frozen copy of the same start-of-round weights, the teacher, sees the same prompt WITH one
knowledge text of the pool (drawn per prompt) inserted by games.insert_knowledge, the renderer collect.py
uses. Each step the student samples a response, both score it token by token, and the loss is the
reverse KL, student to teacher, at the sampling temperature, summed over the student's top-k tokens and
averaged over response tokens. One AdamW step per freshly sampled batch. No reward, no SFT term.

    python distill.py --model smollm2-135m --trajectories runs/demo/round_1/deploy.jsonl \\
        --knowledge runs/demo/round_1/knowledge.jsonl --out runs/demo/round_1/model

Simplified relative to the paper: HF `generate` for sampling instead of vLLM; one GPU (or CPU), with
the teacher as a second frozen copy of the weights; memory is kept down by computing logits only at
response positions, in chunks that are recomputed in the backward pass, and by micro-batching.
"""

import argparse
import copy
import importlib.util
import json
import os
import random
import resource
import shutil
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm

import common
import games


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_model_args(p)
    p.add_argument(
        "--trajectories",
        required=True,
        help="deployment trajectories (collect.py JSONL); every turn prompt is a training input",
    )
    p.add_argument("--knowledge", required=True, help="knowledge pool (extract.py JSONL); records with in_pool true")
    p.add_argument("--out", required=True, help="output model folder (HF save_pretrained); skipped if it exists")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument(
        "--steps",
        type=common.positive_int,
        default=20,
        help="optimiser steps, one per freshly sampled batch [paper: 20-100]",
    )
    p.add_argument("--batch-size", type=common.positive_int, default=8, help="prompts per step")
    p.add_argument(
        "--lr",
        type=float,
        default=1e-5,
        help="constant learning rate [paper: 1e-6 for 4B/8B, 5e-6 for 1.7B; small models need more]",
    )
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument(
        "--topk", type=int, default=256, help="sum the KL over the student's top-k tokens (0 = full vocabulary)"
    )
    p.add_argument("--max-new-tokens", type=common.positive_int, default=24, help="student response cap")
    p.add_argument(
        "--max-seq-len",
        type=common.positive_int,
        default=4096,
        help="longest prompt+response; a longer one is an error, never cut",
    )
    p.add_argument(
        "--micro-batch-tokens",
        type=common.positive_int,
        default=4096,
        help="tokens per forward/backward (gradient accumulation)",
    )
    p.add_argument(
        "--chunk", type=common.positive_int, default=128, help="response positions per logits chunk (memory)"
    )
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute transformer activations in the backward pass (default: on on CUDA, off on a CPU)",
    )
    p.add_argument(
        "--save-every", type=int, default=0, help="also save OUT/step_N every N steps (0 = only the final model)"
    )
    p.add_argument(
        "--print-every",
        type=int,
        default=10,
        help="print a student response with the teacher's knowledge every N steps",
    )
    p.add_argument("--metrics", default=None, help="metrics JSONL (default: distill_metrics.jsonl beside --out)")
    p.add_argument("--run", default=None, help="run name recorded in the metrics (default: the folder holding round_R)")
    p.add_argument("--round", type=int, default=0, help="round number recorded in the metrics")
    p.add_argument(
        "--optimizer",
        choices=["adamw", "adamw8bit"],
        default=None,
        help="adamw: torch AdamW on fp32 weights (bf16 autocast on a GPU); adamw8bit: torchao AdamW8bit on bf16 "
        "weights with stochastic rounding, 2 bytes of state per parameter (default on CUDA; the paper setting, "
        "Qwen3-4B on one 80 GB GPU). Default on a CPU: adamw",
    )
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- the loss


def reverse_kl(student_logits, teacher_logits, temperature, topk):
    """Per position KL(student || teacher) over the student's top-k tokens, no renormalisation.

    Both distributions are taken at the sampling temperature. Returns (kl, student top-k mass,
    teacher mass on those tokens), each (N,). Gradient flows through p_s and log p_s.
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # bf16 logits are upcast; fp64 stays
    logp_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)  # (N, V)
    logp_t = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)  # (N, V)
    if topk and topk < logp_s.shape[-1]:
        index = logp_s.detach().topk(topk, dim=-1).indices  # (N, k): the support is chosen, not differentiated
        logp_s, logp_t = logp_s.gather(-1, index), logp_t.gather(-1, index)  # (N, k)
    p_s = logp_s.exp()
    kl = (p_s * (logp_s - logp_t)).sum(-1)  # reverse KL: KL(student || teacher), (N,)
    return kl, p_s.sum(-1).detach(), logp_t.exp().sum(-1).detach()


def chunk_kl(student_head, teacher_head, h_student, h_teacher, temperature, topk):
    """Summed KL (and masses) over a chunk of response positions from hidden states (n, H).
    Run under torch.utils.checkpoint, so only one chunk's (n, V) logits ever live at once."""
    with torch.no_grad():
        teacher_logits = teacher_head(h_teacher)  # (n, V)
    kl, mass_s, mass_t = reverse_kl(student_head(h_student), teacher_logits, temperature, topk)
    return kl.sum(), mass_s.sum(), mass_t.sum()


def hidden_at(model, sequences, starts, lengths, pad_id):
    """Final hidden states at the positions that predict each response token: [(R_i, H)].
    Position p's logits predict token p+1, so response tokens [s, s+R) come from [s-1, s+R-1)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):  # right padding: positions stay 0..len-1
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    device = next(model.parameters()).device
    hidden = model.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (B, T, H)
    return [hidden[i, st - 1 : st - 1 + n] for i, (st, n) in enumerate(zip(starts, lengths))]


def micro_batch_loss(student, teacher, pairs, n_total, args):
    """Backward the summed KL of some sequences divided by the batch's response-token count, so
    accumulating micro-batches gives the exact token mean of the whole batch. Returns sums."""
    s_hidden = hidden_at(
        student,
        [p["student_ids"] for p in pairs],
        [p["student_start"] for p in pairs],
        [len(p["response_ids"]) for p in pairs],
        args.pad_id,
    )
    with torch.no_grad():
        t_hidden = hidden_at(
            teacher,
            [p["teacher_ids"] for p in pairs],
            [p["teacher_start"] for p in pairs],
            [len(p["response_ids"]) for p in pairs],
            args.pad_id,
        )
    h_s, h_t = torch.cat(s_hidden), torch.cat(t_hidden)  # (N, H) each, N = response tokens of the micro-batch
    total = torch.zeros(3, device=h_s.device)
    for c in range(0, h_s.shape[0], args.chunk):
        sums = checkpoint(
            chunk_kl,
            student.lm_head,
            teacher.lm_head,
            h_s[c : c + args.chunk],
            h_t[c : c + args.chunk],
            args.temperature,
            args.topk,
            use_reentrant=False,
        )
        total = total + torch.stack(sums)
    (total[0] / n_total).backward()
    return total.detach()


# ----------------------------------------------------------------------------- data


def load_prompts(path):
    """Every turn prompt (chat messages) of every trajectory, with where it came from."""
    records = common.read_jsonl(path, required=("turns",))
    prompts = [
        (f"{r.get('game')}#{r.get('episode')}:{t.get('turn')}", t["messages"])
        for r in records
        for t in r["turns"]
        if t.get("messages")
    ]
    if not prompts:
        raise common.InputError(
            f"{path}: no turn prompts (expected trajectories from collect.py with non-empty `turns`)"
        )
    return prompts


def load_pool(path):
    """The knowledge pool: [(knowledge_id, text)] of records with in_pool true."""
    records = common.read_jsonl(path, required=("knowledge_id", "knowledge"))
    pool = [(r["knowledge_id"], r["knowledge"]) for r in records if r.get("in_pool")]
    if not pool:
        raise common.InputError(f"{path}: the knowledge pool is empty (no record with in_pool true)")
    return pool


def generation_marker(tokenizer, thinking=False):
    """The text the chat template puts after the last message to start the assistant's turn."""
    probe = [{"role": "user", "content": "x"}]
    with_marker = common.chat_text(tokenizer, probe, thinking)
    without = tokenizer.apply_chat_template(
        probe, tokenize=False, add_generation_prompt=False, enable_thinking=thinking
    )
    assert with_marker.startswith(without), "chat template: the generation prompt is not a suffix"
    return with_marker[len(without) :]


def build_pair(tokenizer, student_text, teacher_text, response_ids, marker, max_seq_len):
    """Student and teacher token sequences that share the response token for token.

    Asserts that both prompts end with the assistant marker and that the response text tokenizes
    the same after either prompt (the sampled ids are then valid in both). A sequence longer than
    max_seq_len is an error: cutting the teacher's prompt silently would change what it knows.
    """
    assert student_text.endswith(marker) and teacher_text.endswith(marker), (
        "student/teacher prompts do not end with the same assistant marker"
    )
    s_prompt = tokenizer(student_text, add_special_tokens=False).input_ids
    t_prompt = tokenizer(teacher_text, add_special_tokens=False).input_ids
    text = tokenizer.decode(response_ids)
    s_full = tokenizer(student_text + text, add_special_tokens=False).input_ids
    t_full = tokenizer(teacher_text + text, add_special_tokens=False).input_ids
    assert (
        s_full[: len(s_prompt)] == s_prompt
        and t_full[: len(t_prompt)] == t_prompt
        and s_full[len(s_prompt) :] == t_full[len(t_prompt) :]
    ), "the response does not tokenize identically after the student's and the teacher's prompts"
    for name, prompt in (("student", s_prompt), ("teacher", t_prompt)):
        if len(prompt) + len(response_ids) > max_seq_len:
            raise ValueError(
                f"{name} sequence of {len(prompt) + len(response_ids)} tokens exceeds --max-seq-len {max_seq_len}; raise it, never truncate"
            )
    return dict(
        student_ids=s_prompt + response_ids,
        teacher_ids=t_prompt + response_ids,
        response_ids=response_ids,
        student_start=len(s_prompt),
        teacher_start=len(t_prompt),
    )


def micro_batches(pairs, budget):
    """Split sequences into groups whose student+teacher tokens stay within the budget."""
    groups, current, used = [], [], 0
    for p in pairs:
        n = len(p["student_ids"]) + len(p["teacher_ids"])
        if current and used + n > budget:
            groups.append(current)
            current, used = [], 0
        current.append(p)
        used += n
    return groups + [current] if current else groups


def save_model(model, tokenizer, out, args):
    """save_pretrained into a temp folder beside `out`, then rename: a folder that exists is whole."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.tmp-")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, "args.json"), "w") as f:
        json.dump({k: v for k, v in vars(args).items() if k != "pad_id"}, f, indent=1)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


# ----------------------------------------------------------------------------- numerics, memory, optimizer


def make_teacher(student):
    """A frozen copy of the student that computes exactly as it does: same weights in the same dtype,
    run under the same autocast. A bf16 copy of fp32 master weights computes differently under autocast
    (bf16 residual stream and norms instead of fp32 ones), so identical contexts would give a KL > 0 and a
    gradient of pure numerical noise, which grows relative to the signal as the KL falls."""
    return copy.deepcopy(student).eval().requires_grad_(False)


def training_dtypes(device, optimizer):
    """(weights dtype, compute dtype). adamw keeps fp32 master weights and computes under bf16 autocast on a
    GPU; adamw8bit keeps the weights in the compute dtype, so the KV cache of sampling is bf16 too."""
    device, compute_dtype = common.pick_device(device)
    return (torch.float32 if optimizer == "adamw" else compute_dtype), compute_dtype


def make_optimizer(params, name, lr, weight_decay):
    """AdamW, betas (0.9, 0.999), from a library. adamw: torch's fused kernel (no full-size temporaries).
    adamw8bit: torchao's, both moments in 8 bits with a scale per block of 256; on bf16 weights with stochastic
    rounding, so that an update far below bf16's resolution (lr 1e-6 on a weight ~1e-2, whose bf16 step is
    ~1e-4) lands with the right probability instead of always being rounded away."""
    params = list(params)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, fused=True)
    from torchao.optim import AdamW8bit  # imported here: only this choice needs torchao (it compiles its step)

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
            "logits chunks": 8 * chunk * V * 4,  # fp32 logits, log-softmaxes, p and grads of both models
            "output layer gradient": V * H * b,  # each chunk's (V, H) weight gradient, before it is accumulated
        },
        "optimizer step": {  # fused steps; torchao's is compiled per tensor: an fp32 copy of the largest one
            "gradients": n_params * b,
            "temporaries": 0 if optimizer == "adamw" else V * H * 4,
        },
    }


def phase_bytes(plan):
    """Bytes of each phase on top of the static terms; the teacher's forward and the logits chunks come one
    after the other, never together."""
    t = plan["training"]
    return {
        "sampling": sum(plan["sampling"].values()),
        "training": t["gradients"]
        + t["activations"]
        + max(t["teacher forward"], t["logits chunks"] + t["output layer gradient"]),
        "optimizer step": sum(plan["optimizer step"].values()),
    }


def planned_peak(plan):
    """(bytes, phase): the static terms plus the largest phase."""
    phases = phase_bytes(plan)
    phase = max(phases, key=phases.get)
    return sum(plan["static"].values()) + phases[phase], phase


def main_plan(student, tokenizer, prompts, pool, args):
    """The memory plan of this run: the longest turn prompt, with the longest knowledge for the teacher."""
    _, compute_dtype = common.pick_device(args.device)
    tokens = lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    lengths = [tokens(common.chat_text(tokenizer, m, args.thinking)) for _, m in prompts]
    longest = prompts[max(range(len(prompts)), key=lengths.__getitem__)][1]
    knowledge = max((k for _, k in pool), key=tokens)
    teacher_text = common.chat_text(tokenizer, games.insert_knowledge(longest, knowledge), args.thinking)
    return plan_memory(
        student.config,
        sum(p.numel() for p in student.parameters()),
        batch_size=args.batch_size,
        prompt_tokens=max(lengths),
        teacher_prompt_tokens=tokens(teacher_text),
        new_tokens=args.max_new_tokens,
        weight_bytes=next(student.parameters()).element_size(),
        optimizer=args.optimizer,
        checkpointing=args.gradient_checkpointing,
        micro_batch_tokens=args.micro_batch_tokens,
        chunk=args.chunk,
        autocast_bytes=compute_dtype.itemsize if student.dtype != compute_dtype else 0,
    )


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


# ----------------------------------------------------------------------------- main


def main(args):
    if os.path.exists(args.out) and not args.force:
        print(f"distill | {args.out} exists, skipped (use --force to retrain)")
        return None
    prompts, pool = load_prompts(args.trajectories), load_pool(args.knowledge)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    # numerics and memory: adamw8bit (default on a GPU) keeps bf16 weights, adamw fp32 master weights under
    # bf16 autocast; either way the teacher computes exactly as the student does
    device, compute_dtype = common.pick_device(args.device)
    args.optimizer = args.optimizer or ("adamw8bit" if device.type == "cuda" else "adamw")
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = device.type == "cuda"
    if args.optimizer == "adamw8bit" and importlib.util.find_spec("torchao") is None:
        raise common.InputError("--optimizer adamw8bit needs torchao (pip install -r requirements.txt)")
    weights_dtype, _ = training_dtypes(args.device, args.optimizer)
    student, tokenizer = common.load_model(args.model, args.device, dtype=weights_dtype)
    teacher = make_teacher(student)
    autocast = torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32)
    if args.gradient_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(use_reentrant=False))
    optimizer = make_optimizer(student.parameters(), args.optimizer, args.lr, args.weight_decay)
    plan = main_plan(student, tokenizer, prompts, pool, args)
    print(format_plan(plan, device_capacity(device)), flush=True)
    args.pad_id = tokenizer.pad_token_id
    marker = generation_marker(tokenizer, args.thinking)
    metrics_path = args.metrics or os.path.join(os.path.dirname(os.path.abspath(args.out)), "distill_metrics.jsonl")
    run = args.run or common.run_name(args.out)
    order, history = [], []
    for step in tqdm(range(1, args.steps + 1), desc="distill"):
        t0 = time.time()
        if len(order) < args.batch_size:  # walk the prompts in a fresh random order, epoch after epoch
            order += rng.sample(range(len(prompts)), len(prompts))
        batch, order = [prompts[i] for i in order[: args.batch_size]], order[args.batch_size :]
        knowledge = [rng.choice(pool) for _ in batch]  # one pool entry per prompt
        student_texts = [common.chat_text(tokenizer, m, args.thinking) for _, m in batch]
        teacher_texts = [
            common.chat_text(tokenizer, games.insert_knowledge(m, k), args.thinking)
            for (_, m), (_, k) in zip(batch, knowledge)
        ]
        student.eval()  # 1. the student samples on-policy, full support, at temperature τ
        with autocast:
            responses = common.generate_ids(
                student, tokenizer, student_texts, args.max_new_tokens, args.temperature, 1.0, 0
            )
        try:
            pairs = [
                build_pair(tokenizer, s, t, r, marker, args.max_seq_len)
                for s, t, r in zip(student_texts, teacher_texts, responses)
            ]
        except ValueError as e:
            raise common.InputError(f"{args.trajectories}: {e}")
        # 2. both score the sample; the loss is backpropagated micro-batch by micro-batch
        student.train()
        n_total = sum(len(r) for r in responses)
        with autocast:
            sums = sum(
                micro_batch_loss(student, teacher, group, n_total, args)
                for group in micro_batches(pairs, args.micro_batch_tokens)
            )
        grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), args.clip)
        skipped = not torch.isfinite(grad_norm)
        if not skipped:  # a non-finite step is skipped, and logged
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.time() - t0
        lengths = [len(r) for r in responses]
        record = dict(
            run=run,
            round=args.round,
            step=step,
            kl=sums[0].item() / n_total,
            student_topk_mass=sums[1].item() / n_total,
            teacher_topk_mass=sums[2].item() / n_total,
            response_len_mean=n_total / len(responses),
            response_len_max=max(lengths),
            capped=sum(r[-1] != tokenizer.eos_token_id for r in responses),
            grad_norm=grad_norm.item(),
            skipped=skipped,
            lr=args.lr,
            tokens_per_s=sum(len(p["student_ids"]) + len(p["teacher_ids"]) for p in pairs) / seconds,
            seconds=seconds,
            peak_memory_mb=peak_memory_mb(device),
        )
        common.append_jsonl(metrics_path, record)
        history.append(record)
        if args.print_every and (step == 1 or step % args.print_every == 0):
            print(
                f"\n--- step {step} | kl {record['kl']:.4f} | knowledge {knowledge[0][0]} ---\n{knowledge[0][1][:600]}\n"
                f"[prompt] ...{batch[0][1][-1]['content'][-300:]}\n[student] {tokenizer.decode(responses[0])!r}\n---"
            )
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            save_model(student, tokenizer, os.path.join(args.out + "_steps", f"step_{step}"), args)
    save_model(student, tokenizer, args.out, args)
    print(format_peak(plan, device), flush=True)
    first, last = history[0], history[-1]
    print(
        f"distill | steps {args.steps} | kl {first['kl']:.4f} -> {last['kl']:.4f} | top-k mass {last['student_topk_mass']:.3f} | "
        f"len {last['response_len_mean']:.1f} | skipped {sum(h['skipped'] for h in history)} | tokens/s {sum(h['tokens_per_s'] for h in history) / len(history):.0f} | "
        f"peak {max(h['peak_memory_mb'] for h in history):.0f} MB | {args.out}"
    )
    return history


if __name__ == "__main__":
    common.run_main(main, parse_args())
