"""A stand-in for a thinking model's sampler (Qwen3 with thinking on), for tests of the paper setting.

A tiny random model never writes `<think>...</think>` or a usable command, so the paths that a real
Qwen3 takes (reasoning first, the command or the knowledge items after `</think>`, a response that
starts with a newline) would never run. `generate_ids` replaces `lm.generate_ids`: it answers every
prompt the way Qwen3 does, in token ids of the real tokenizer, cut at `max_new_tokens` exactly as
`generate` would cut it (so a cap too small for the reasoning leaves the answer inside `<think>`).

- a turn prompt ("Your command:"): reasoning, then one of the listed commands in brackets;
- an extraction prompt ("EXPERIENCE ITEM"): reasoning, then two marked items;
- anything else (IFEval): reasoning, then a short answer.
With thinking off (the prompt already ends in `<think>\\n\\n</think>\\n\\n`) there is no reasoning.
Every third response starts with a newline, as sampled ones sometimes do.

In-process: `monkeypatch.setattr(lm, "generate_ids", thinking_stub.generate_ids)`.
For loop.sh: `PY="python tests/thinking_stub.py" bash loop.sh` runs each stage with the stub in place.
"""

import json
import os
import re
import runpy
import sys

REASONING_WORDS = {"turn": 60, "extract": 150, "other": 40}  # ~2.5 tiny-tokenizer tokens a word
CALLS = {"n": 0}


def kind_of(prompt):
    if "EXPERIENCE ITEM" in prompt:
        return "extract"
    if "Your command:" in prompt:
        return "turn"
    return "other"


def answer_for(prompt, kind, n):
    if kind == "turn":
        user = prompt.rsplit("<|im_start|>user", 1)[-1]
        listed = re.search(r"Commands you can use: (.*)", user)
        commands = [c.strip() for c in listed.group(1).split(",")] if listed else ["look"]
        return f"[{commands[n % len(commands)]}]"
    if kind == "extract":
        return (
            f"- EXPERIENCE ITEM: Lesson {n}: open a container before taking what is inside.\n"
            f"- EXPERIENCE ITEM: Lesson {n}: read the goal, then go where it points."
        )
    return "Here is my answer, in plain words, with no commas."


def response_text(prompt, n):
    kind = kind_of(prompt)
    answer = answer_for(prompt, kind, n)
    thinking_off = prompt.rstrip(" \n").endswith("</think>")
    lead = "\n" if n % 3 == 0 else ""
    if thinking_off:
        return lead + answer
    reasoning = " ".join(["let me think about what the game wants next"] * (REASONING_WORDS[kind] // 9))
    return f"{lead}<think>\n{reasoning}\n</think>\n\n{answer}"


def log(**record):
    """With OEL_STUB_LOG=FILE set, append what the stage asked for to FILE (JSONL), for tests to read."""
    if os.environ.get("OEL_STUB_LOG"):
        with open(os.environ["OEL_STUB_LOG"], "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(stage=os.path.basename(sys.argv[0]), **record)) + "\n")


def generate_ids(model, tokenizer, prompts, max_new_tokens, *args, **kwargs):
    """Token ids of a thinking model's answers, each ended by EOS unless cut at max_new_tokens."""
    out = []
    for prompt in prompts:
        CALLS["n"] += 1
        text = response_text(prompt, CALLS["n"])
        ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        out.append(ids[:max_new_tokens])
        sampling = dict(zip(("temperature", "top_p", "top_k"), args))
        sampling.update({k: v for k, v in kwargs.items() if k in ("temperature", "top_p", "top_k")})
        log(
            event="generate",
            prompt=prompt,
            response=tokenizer.decode(out[-1]),
            max_new_tokens=max_new_tokens,
            **sampling,
        )
    return out


def logged(chat_text):
    """lm.chat_text that also logs every prompt it renders (the teacher's included)."""

    def wrapper(tokenizer, messages, *args, **kwargs):
        text = chat_text(tokenizer, messages, *args, **kwargs)
        log(event="chat_text", text=text)
        return text

    return wrapper


if __name__ == "__main__":  # python tests/thinking_stub.py STAGE.py ARGS... (or -m MODULE ARGS...): with the stub
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    if sys.argv[1:3] == ["-m", "oel.driver"]:  # loop.sh's run folder rules and stage runner: no model, no stub
        sys.argv = sys.argv[2:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
        sys.exit(0)
    from oel import lm

    lm.generate_ids = generate_ids
    lm.chat_text = logged(lm.chat_text)
    if sys.argv[1] == "-m":  # loop.sh's knob check, python -m oel.preflight
        sys.argv = sys.argv[2:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
