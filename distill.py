"""Stage 3 of the OEL loop: consolidate the knowledge into the weights by on-policy context distillation.

The student (the policy θ_{r-1}, trained) sees a turn prompt of a deployment trajectory with NO
knowledge; the teacher sees the same prompt WITH one knowledge text of the pool (drawn per prompt)
inserted by experience.insert_knowledge, the renderer collect.py uses. `--mode on-policy` (the method): the
student samples a response, both score it token by token, and the loss is the reverse KL, student to
teacher, at the sampling temperature, summed over the student's top-k tokens and averaged over response
tokens. `--mode off-policy` (OPCD's baseline, "context distillation"): the teacher samples with the
knowledge and the loss is the forward KL, teacher to student, over the teacher's top-k tokens, on those
samples. `--teacher frozen` (the method) keeps a copy of the start-of-round weights; `--teacher live` uses
the student's current weights with the knowledge, no copy. One AdamW step per freshly sampled batch.

    python distill.py --model smollm2-135m --trajectories runs/demo/round_1/deployment_trajectories.jsonl \\
        --knowledge runs/demo/round_1/knowledge.jsonl --out runs/demo/round_1/model

Simplified relative to the papers: HF `generate` for sampling instead of vLLM; one GPU (or CPU), with
the teacher as a second frozen copy of the weights; memory is kept down by computing logits only at
response positions, in chunks that are recomputed in the backward pass, and by micro-batching; the teacher runs
the prefix that the prompts of one pool entry share (up to the end of its knowledge) once (oel/prefix.py), as an
engine's prefix cache would. OPCD's
off-policy baseline samples the teacher's responses once before training (a frozen teacher sampling each
step draws from the same distribution) on the states of the teacher's own games; here the teacher answers
the deployment turn prompts, the states the student visited, so only the sampler and the loss differ.
"""

import argparse
import copy
import math
import os
import random
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm

from oel import cli, experience, jsonl, lm, prefix, rollouts, runfolder, training

MAX_LR = 1e-3  # above every full fine-tuning recipe of an LLM; Adam moves each weight by ~lr a step
MAX_WEIGHT_GROWTH = 2.0  # the weights' norm may grow this much before the run is stopped as diverged


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], conflict_handler="resolve")
    cli.add_model_args(p)
    nonneg, number = cli.nonneg_int, cli.float_range
    # distillation's own ranges for the shared sampling flags (these definitions replace the shared ones)
    p.add_argument("--temperature", type=number(0, lo_open=True), default=0.7, help="sampling temperature τ (> 0)")
    # the sampler keeps full support: the KL is taken over its whole distribution at τ, and a truncated
    # sampler would draw samples that the loss does not model
    p.add_argument("--top-p", type=float, choices=[1.0], default=1.0, help="1 only: sampling at full support")
    p.add_argument("--top-k", type=int, choices=[0], default=0, help="0 only: sampling at full support")
    p.add_argument("--seed", type=nonneg, default=0, help="random seed (prompt order, knowledge, sampling)")
    p.add_argument("--trajectories", required=True, help="deployment trajectories (collect.py JSONL): turn prompts")
    p.add_argument("--knowledge", required=True, help="knowledge pool (extract.py JSONL); records with in_pool true")
    p.add_argument("--out", required=True, help="output model folder (HF save_pretrained); skipped if it exists")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument(
        "--mode",
        choices=("on-policy", "off-policy"),
        default="on-policy",
        help="on-policy: the student samples, reverse KL (the method); off-policy: the teacher samples with the "
        "knowledge, forward KL over the teacher's top-k (OPCD's context-distillation baseline)",
    )
    p.add_argument(
        "--teacher",
        choices=("frozen", "live"),
        default="frozen",
        help="frozen: a copy of the start-of-round weights (the method); live: the student's current weights "
        "with the knowledge in context, no copy",
    )
    p.add_argument("--steps", type=cli.positive_int, default=20, help="optimiser steps, one per batch [20-100]")
    p.add_argument("--batch-size", type=cli.positive_int, default=8, help="prompts per step")
    p.add_argument(
        "--lr",
        type=number(0, MAX_LR),
        default=1e-5,
        help=f"constant learning rate in [0, {MAX_LR}] (0: a control run that changes nothing) [paper: 1e-6 for "
        "4B/8B, 5e-6 for 1.7B; small models need more]",
    )
    p.add_argument("--weight-decay", type=number(0), default=0.01, help="AdamW weight decay (>= 0)")
    p.add_argument("--clip", type=number(0, lo_open=True), default=1.0, help="gradient-norm clip (> 0)")
    p.add_argument("--loss-topk", type=nonneg, default=256, help="the KL over the sampler's top-k tokens (0 = all)")
    p.add_argument("--max-new-tokens", type=cli.positive_int, default=24, help="response cap")
    p.add_argument(
        "--max-seq-len",
        type=cli.positive_int,
        default=None,
        help="longest prompt+response (default: derived, the longest teacher prompt + --max-new-tokens); "
        "checked before the model loads; a longer sequence is an error, never cut",
    )
    p.add_argument("--micro-batch-tokens", type=cli.positive_int, default=4096, help="tokens per forward/backward")
    p.add_argument("--chunk", type=cli.positive_int, default=128, help="response positions per logits chunk")
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute transformer activations in the backward pass (default: on on CUDA, off on a CPU)",
    )
    p.add_argument("--save-every", type=nonneg, default=0, help="also save OUT_steps/step_N every N steps")
    p.add_argument("--print-every", type=nonneg, default=10, help="print a sample every N steps (0: never)")
    p.add_argument("--metrics", default=None, help="metrics JSONL (default: OUT.metrics.jsonl, beside the model)")
    p.add_argument("--run", default=None, help="run name recorded in the metrics (default: the folder holding round_R)")
    p.add_argument("--round", type=nonneg, default=0, help="round number recorded in the metrics")
    p.add_argument(
        "--optimizer",
        choices=["adamw", "adamw8bit"],
        default=None,
        help="adamw: torch AdamW on fp32 weights (bf16 autocast on a GPU); adamw8bit: torchao AdamW8bit on bf16 "
        "weights with stochastic rounding, 2 bytes of state per parameter (default on CUDA; the paper setting, "
        "Qwen3-4B on one 80 GB GPU). Default on a CPU: adamw",
    )
    cli.renamed(p, "--topk", "--loss-topk (the KL's support; --top-k is the sampler's, fixed at 0 here)")
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


def forward_kl(student_logits, teacher_logits, temperature, topk):
    """Per position KL(teacher || student) over the teacher's top-k tokens, no renormalisation: the loss of
    OPCD's off-policy baseline (its code: kl_penalty "full" with the teacher as the weighting side, top-k
    indices from the teacher). The same formula as reverse_kl with the roles swapped; the teacher's logits
    carry no gradient, so only log p_s is differentiated. Returns (kl, student mass, teacher mass) on the support."""
    kl, teacher_mass, student_mass = reverse_kl(teacher_logits, student_logits, temperature, topk)
    return kl, student_mass, teacher_mass


KL = {"on-policy": reverse_kl, "off-policy": forward_kl}


def reference_loss(student, teacher, pairs, *, mode, temperature, topk):
    """The batch loss written plainly: full logits of each whole sequence, the mean over response tokens of
    the per-token KL. micro_batch_loss computes exactly this, in chunks and micro-batches (tested)."""
    total, n_tokens, device = 0.0, 0, next(student.parameters()).device
    for p in pairs:
        s_logits = student(torch.tensor([p["student_ids"]], device=device)).logits[0]  # (T_s, V)
        with torch.no_grad():
            t_logits = teacher(torch.tensor([p["teacher_ids"]], device=device)).logits[0]  # (T_t, V)
        s_at, t_at = p["student_start"] - 1, p["teacher_start"] - 1  # position p predicts token p+1
        kl, _, _ = KL[mode](s_logits[s_at:-1], t_logits[t_at:-1], temperature, topk)  # (R,)
        total, n_tokens = total + kl.sum(), n_tokens + len(p["response_ids"])
    return total / n_tokens


def chunk_kl(student_head, teacher_head, h_student, h_teacher, mode, temperature, topk):
    """Summed KL (and masses) over a chunk of response positions from hidden states (n, H).
    Run under torch.utils.checkpoint, so only one chunk's (n, V) logits ever live at once."""
    with torch.no_grad():
        teacher_logits = teacher_head(h_teacher)  # (n, V)
    kl, mass_s, mass_t = KL[mode](student_head(h_student), teacher_logits, temperature, topk)
    return kl.sum(), mass_s.sum(), mass_t.sum()


def hidden_at(model, pairs, side, pad_id):
    """Final hidden states of the `side` ("student" or "teacher") sequences at the positions that predict
    each response token: [(R_i, H)]. Position p's logits predict token p+1, so response tokens [s, s+R)
    come from positions [s-1, s+R-1)."""
    sequences = [p[f"{side}_ids"] for p in pairs]
    ids = torch.full((len(sequences), max(map(len, sequences))), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):  # right padding: positions stay 0..len-1
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    device = next(model.parameters()).device
    hidden = model.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (B, T, H)
    starts = [p[f"{side}_start"] - 1 for p in pairs]
    return [hidden[i, s : s + len(p["response_ids"])] for i, (s, p) in enumerate(zip(starts, pairs))]


def teacher_states(teacher, pairs, pad_id, budget):
    """The teacher's final hidden states at each pair's response positions, kept in the pair ("teacher_hidden"),
    for the whole batch before the student's micro-batches. The teacher sequences that drew the same pool entry
    begin alike up to the end of its knowledge block; that prefix runs once for all of them (oel/prefix.py,
    equal to the plain forward; OEL_SHARE_PREFIX=0 runs every sequence whole)."""
    states = prefix.hidden_states(
        teacher, [p["teacher_ids"] for p in pairs], [p["teacher_start"] for p in pairs],
        [p["teacher_shared"] for p in pairs], pad_id, budget,
    )  # fmt: skip
    for p, h in zip(pairs, states):
        p["teacher_hidden"] = h


def micro_batch_kl(student, teacher, pairs, *, mode, temperature, topk, chunk, pad_id):
    """The KL summed over the response tokens of some sequences (a tensor to backpropagate), and the masses
    summed on the top-k support. main divides by the whole batch's response-token count before backward, so the
    micro-batches' gradients add up to that of the batch's token mean (test_chunked_loss_equals_reference)."""
    s_hidden = hidden_at(student, pairs, "student", pad_id)
    if "teacher_hidden" in pairs[0]:  # computed for the whole batch by teacher_states
        t_hidden = [p["teacher_hidden"] for p in pairs]
    else:
        with torch.no_grad():
            t_hidden = hidden_at(teacher, pairs, "teacher", pad_id)
    h_s, h_t = torch.cat(s_hidden), torch.cat(t_hidden)  # (N, H) each, N = response tokens of the micro-batch
    heads, setting = (student.lm_head, teacher.lm_head), (mode, temperature, topk)
    kl = student_mass = teacher_mass = 0.0
    for c in range(0, h_s.shape[0], chunk):
        sums = checkpoint(chunk_kl, *heads, h_s[c : c + chunk], h_t[c : c + chunk], *setting, use_reentrant=False)
        kl, student_mass, teacher_mass = kl + sums[0], student_mass + sums[1], teacher_mass + sums[2]
    return kl, {"student_mass": student_mass.item(), "teacher_mass": teacher_mass.item()}


# ----------------------------------------------------------------------------- data


def build_pair(student_prompt, teacher_prompt, response_ids, marker_ids, max_seq_len):
    """Student and teacher token sequences that share the sampled response ids token for token.

    Both prompts (token ids) must end with the assistant marker's ids, so the response follows the same
    tokens on both sides; the sampled ids are reused as they are, never re-tokenized from text. A sequence
    longer than max_seq_len is an error: cutting the teacher's prompt silently would change what it knows.
    """
    m = len(marker_ids)
    if student_prompt[-m:] != marker_ids or teacher_prompt[-m:] != marker_ids:
        raise cli.InputError("the student's and the teacher's prompts do not end with the assistant marker's tokens")
    for name, prompt in (("student", student_prompt), ("teacher", teacher_prompt)):
        if len(prompt) + len(response_ids) > max_seq_len:
            raise cli.InputError(
                f"a {name} sequence of {len(prompt) + len(response_ids)} tokens exceeds --max-seq-len {max_seq_len}; "
                "raise it (or leave it out: derived), never truncate"
            )
    # where the teacher's own part starts at the latest: the end of the knowledge block (the tokens before it are
    # those the student's prompt begins with, then the block; prompts that drew the same entry share them all)
    shared = prefix.common_length(student_prompt, teacher_prompt) + len(teacher_prompt) - len(student_prompt)
    return dict(
        student_ids=student_prompt + response_ids,
        teacher_ids=teacher_prompt + response_ids,
        response_ids=response_ids,
        student_start=len(student_prompt),
        teacher_start=len(teacher_prompt),
        teacher_shared=min(shared, len(teacher_prompt) - 1),
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


# ----------------------------------------------------------------------------- numerics, memory, optimizer


def make_teacher(student):
    """A frozen copy of the student that computes exactly as it does: same weights in the same dtype,
    run under the same autocast. A bf16 copy of fp32 master weights computes differently under autocast
    (bf16 residual stream and norms instead of fp32 ones), so identical contexts would give a KL > 0 and a
    gradient of pure numerical noise, which grows relative to the signal as the KL falls."""
    return copy.deepcopy(student).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- main


def check(args):
    """What the arguments alone can refuse (also `--check`, loop.sh's start-up check): an optimizer this machine
    lacks. Returns the device, its compute dtype, the optimizer and whether to checkpoint activations."""
    device, compute_dtype = lm.pick_device(args.device)
    return device, compute_dtype, *training.training_choices(device, args.optimizer, args.gradient_checkpointing)


def main(args):
    # the device's numerics; one writer per run folder; an existing output is kept (--force retrains)
    device, compute_dtype, optimizer_name, checkpointing = check(args)
    if not runfolder.claim_outputs(args.out, args, folders=True, stage="distill"):
        return None

    # 1. the inputs: every turn prompt of the deployment trajectories (the student's x) and the knowledge pool
    # (the teacher's e), every pair and sequence length checked with the tokenizer alone, before the model loads
    prompts, family = rollouts.load_turn_prompts(args.trajectories)
    pool = experience.load_pool(args.knowledge, args.thinking, family=family, family_from=args.trajectories)
    tokenizer = lm.load_tokenizer(args.model)
    marker_ids = tokenizer(lm.generation_marker(tokenizer, args.thinking), add_special_tokens=False).input_ids
    max_seq_len, lengths = training.check_lengths(
        tokenizer, prompts, pool, marker_ids, thinking=args.thinking, max_new_tokens=args.max_new_tokens,
        max_seq_len=args.max_seq_len, model_path=lm.resolve_model(args.model),
    )  # fmt: skip

    # 2. the student θ_{r-1}, trained by AdamW; the teacher: a frozen copy of θ_{r-1} (or the student itself: live)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    weights_dtype, _ = training.training_dtypes(args.device, optimizer_name)
    student, tokenizer = lm.load_model(args.model, args.device, dtype=weights_dtype, tokenizer=tokenizer)
    teacher = student if args.teacher == "live" else make_teacher(student)
    if checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(use_reentrant=False))
    optimizer = training.make_optimizer(student.parameters(), optimizer_name, args.lr, args.weight_decay)
    autocast = torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32)
    log = StepLog(args, student, teacher, tokenizer, lengths, compute_dtype, optimizer_name, checkpointing, max_seq_len)

    order = []
    for step in tqdm(range(1, args.steps + 1), desc="distill"):
        t0 = time.time()
        # 3. a batch of turn prompts, walked in a fresh random order epoch after epoch, each with one pool entry
        if len(order) < args.batch_size:
            order += rng.sample(range(len(prompts)), len(prompts))
        batch, order = [prompts[i] for i in order[: args.batch_size]], order[args.batch_size :]
        knowledge = [rng.choice(pool) for _ in batch]
        # 4. the teacher's prompt: the same turn with the knowledge inserted where play puts it
        texts = [
            experience.pair_prompts(tokenizer, m, k, args.thinking, f"{pid} with {kid}")
            for (pid, m), (kid, k) in zip(batch, knowledge)
        ]
        student_texts, teacher_texts = [s for s, _ in texts], [t for _, t in texts]
        # 5. sample at temperature τ, full support: on-policy the student without the knowledge (the method),
        # off-policy the teacher with it
        sampler, sampler_texts = (student, student_texts) if args.mode == "on-policy" else (teacher, teacher_texts)
        sampler.eval()
        with autocast:
            responses = lm.generate_ids(
                sampler, tokenizer, sampler_texts, args.max_new_tokens, args.temperature, 1.0, 0
            )
        s_prompts = tokenizer(student_texts, add_special_tokens=False).input_ids
        t_prompts = tokenizer(teacher_texts, add_special_tokens=False).input_ids
        pairs = [build_pair(s, t, r, marker_ids, max_seq_len) for s, t, r in zip(s_prompts, t_prompts, responses)]
        # 6. both score the samples: the reverse KL at τ over the student's top-k, its mean over the batch's
        # response tokens, backpropagated micro-batch by micro-batch (exactly reference_loss of the whole batch)
        n_total, sums = sum(len(r) for r in responses), {"kl": 0.0, "student_mass": 0.0, "teacher_mass": 0.0}
        with autocast:
            teacher_states(teacher, pairs, tokenizer.pad_token_id, args.micro_batch_tokens)  # each shared prefix once
            student.train()
            for group in micro_batches(pairs, args.micro_batch_tokens):
                kl, masses = micro_batch_kl(
                    student, teacher, group, mode=args.mode, temperature=args.temperature, topk=args.loss_topk,
                    chunk=args.chunk, pad_id=tokenizer.pad_token_id,
                )  # fmt: skip
                (kl / n_total).backward()
                sums = {"kl": sums["kl"] + kl.item(), **{k: sums[k] + masses[k] for k in masses}}
        # 7. one AdamW step on the gradient clipped at --clip; a step with a non-finite gradient is skipped
        grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), args.clip)
        if torch.isfinite(grad_norm):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # 8. the step's record (and a diverged run stopped before anything broken is saved)
        log.record(step, sums, responses, pairs, grad_norm, time.time() - t0, knowledge[0], batch[0])

    # 9. the checkpoint: θ_r
    return log.finish()


class StepLog:
    """What distill does around its loop: the memory plan before the first step, the metrics file (afresh: one
    attempt per file), each step's record, the divergence guard, the sample print, the snapshots, and at the end
    the checkpoint with the arguments that made it and the summary."""

    def __init__(
        self, args, student, teacher, tokenizer, lengths, compute_dtype, optimizer_name, checkpointing, max_seq_len
    ):
        self.args, self.student, self.tokenizer = args, student, tokenizer
        self.device = next(student.parameters()).device
        self.plan = training.plan_run(
            student.config, sum(p.numel() for p in student.parameters()), lengths, teacher_copy=teacher is not student,
            weight_bytes=next(student.parameters()).element_size(), compute_bytes=compute_dtype.itemsize,
            batch_size=args.batch_size, new_tokens=args.max_new_tokens, optimizer=optimizer_name,
            checkpointing=checkpointing, micro_batch_tokens=args.micro_batch_tokens, chunk=args.chunk,
        )  # fmt: skip
        print(training.format_plan(self.plan, training.device_capacity(self.device)), flush=True)
        # model/args.json: the arguments as given, and what the defaults resolved to on this machine
        resolved = dict(max_seq_len=max_seq_len, optimizer=optimizer_name, gradient_checkpointing=checkpointing)
        self.settings = dict(vars(args), resolved=resolved)
        self.eos = lm.eos_ids(student, tokenizer)  # a response that ends in none of these was cut at the cap
        self.path = args.metrics or metrics_path(args.out)  # one file per model: two trainings never share one
        if os.path.exists(self.path):  # an earlier attempt's records (killed, or retrained with --force) go
            print(f"distill | {self.path}: an earlier attempt's metrics are replaced by this run's")
        jsonl.write_jsonl(self.path, [])
        self.run, self.history, self.start_norm = args.run or runfolder.run_name(args.out), [], weight_norm(student)

    def record(self, step, sums, responses, pairs, grad_norm, seconds, entry, prompt):
        args, norm = self.args, weight_norm(self.student)
        if not math.isfinite(norm) or norm > MAX_WEIGHT_GROWTH * self.start_norm:
            raise cli.RunError(
                f"training diverged at step {step}: the weights' norm went from {self.start_norm:.4g} to {norm:.4g} "
                f"(--lr {args.lr}); nothing was saved, {self.path} holds the steps so far. Lower --lr"
            )
        record = dict(run=self.run, round=args.round, out=args.out, step=step, mode=args.mode, teacher=args.teacher)
        record.update(step_metrics(sums, responses, pairs, self.eos, grad_norm, seconds))
        record.update(lr=args.lr, weight_norm=norm, peak_memory_mb=training.peak_memory_mb(self.device))
        jsonl.append_jsonl(self.path, record)
        self.history.append(record)
        if args.print_every and (step == 1 or step % args.print_every == 0):
            show_sample(step, record, entry, prompt, self.tokenizer.decode(responses[0]), args.mode)
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            where = os.path.join(args.out + "_steps", f"step_{step}")
            lm.save_model(self.student, self.tokenizer, where, self.settings)

    def finish(self):
        """Save θ_r (a run whose every step had a non-finite gradient learned nothing: no model); the history."""
        if all(h["skipped"] for h in self.history):
            raise cli.RunError(f"every step's gradient was non-finite (skipped): nothing was saved; see {self.path}")
        lm.save_model(self.student, self.tokenizer, self.args.out, self.settings)
        print(training.format_peak(self.plan, self.device), flush=True)
        print(summary_line(self.history, self.args))
        return self.history


def metrics_path(out):
    """Where a model's training metrics go: beside it, named after it (RUN/round_R/model.metrics.jsonl)."""
    return os.path.normpath(out) + ".metrics.jsonl"


@torch.no_grad()
def weight_norm(model):
    """The L2 norm of all the weights together (fp32): Adam moves every weight by about the lr a step, so a run
    with a learning rate no recipe uses shows here at once."""
    return torch.stack([p.norm().float() for p in model.parameters()]).norm().item()  # no fp32 copy, one sync


def step_metrics(sums, responses, pairs, eos, grad_norm, seconds):
    """One step's record: the loss (mean over response tokens), the masses on the KL's top-k support, the
    responses' lengths and how many hit --max-new-tokens, the gradient norm, the speed."""
    n_total = sum(len(r) for r in responses)
    return dict(
        kl=sums["kl"] / n_total,
        student_topk_mass=sums["student_mass"] / n_total,
        teacher_topk_mass=sums["teacher_mass"] / n_total,
        responses=len(responses),
        response_len_mean=n_total / len(responses),
        response_len_max=max(len(r) for r in responses),
        capped=sum(r[-1] not in eos for r in responses),
        grad_norm=grad_norm.item(),
        skipped=not torch.isfinite(grad_norm).item(),
        tokens_per_s=sum(len(p["student_ids"]) + len(p["teacher_ids"]) for p in pairs) / seconds,
        seconds=seconds,
    )


def show_sample(step, record, entry, prompt, response, mode):
    """One knowledge text, the end of its turn prompt and the sampled response: the debugger of this stage."""
    (kid, k), sampled_by = entry, "student" if mode == "on-policy" else "teacher"
    print(
        f"\n--- step {step} | kl {record['kl']:.4f} | knowledge {kid} ---\n{k[:600]}\n"
        f"[prompt] ...{prompt[1][-1]['content'][-300:]}\n[{sampled_by}] {response!r}\n---"
    )


def summary_line(history, args):
    first, last = history[0], history[-1]
    return (
        f"distill | {args.mode}, {args.teacher} teacher | steps {args.steps} | kl {first['kl']:.4f} -> "
        f"{last['kl']:.4f} | top-k mass {last['student_topk_mass']:.3f} | len {last['response_len_mean']:.1f} | "
        f"skipped {sum(h['skipped'] for h in history)} | "
        f"tokens/s {sum(h['tokens_per_s'] for h in history) / len(history):.0f} | "
        f"peak {max(h['peak_memory_mb'] for h in history):.0f} MB | {args.out}"
    )


if __name__ == "__main__":
    cli.run_main(main, parse_args(), check)
