"""Shared test fixtures: a tiny random chat model (built from a config, ~1M parameters, with a
tokenizer trained in a fraction of a second) and a few tiny TextWorld games made once per session."""

import os
import sys

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network


def pytest_configure(config):
    # torch warns about its own mkldnn module when torch.compile (torchao's 8-bit AdamW step) imports it on a
    # CPU; pytest shows DeprecationWarnings that a stage never prints. Anything else still shows.
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "qwen3_chat_template.jinja"), encoding="utf-8") as f:
    QWEN3_TEMPLATE = f.read()  # Qwen3's public chat template (Qwen/Qwen3-1.7B's tokenizer_config.json), as a file
CORPUS = [
    "go north go south go east go west take key open door unlock door with key look inventory examine",
    "You are in a kitchen. There is a coin on the floor. Your objective is to take the coin.",
    "What you learned from earlier games: open containers before taking things from them.",
    "- EXPERIENCE ITEM: read the goal first. Result: WON LOST NOT FINISHED turn limit score",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()[]<>/-_=+*#\n",
]


def make_tiny_model(folder, vocab_size=384, seed=0, arch="llama", tie=True, template="chatml"):
    """A random ~1M-parameter chat model saved as an HF folder.

    template "qwen3": Qwen3's real chat template (tests/qwen3_chat_template.jinja, its thinking switch
    included), `<think>`/`</think>` as ordinary added tokens (decoded text keeps them, as Qwen3's do) and
    two EOS ids in the generation config (`<|im_end|>` and `<|endoftext|>`, as Qwen3 lists them)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + (["<think>", "</think>"] if template != "qwen3" else [])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML
    if template == "qwen3":
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
        tokenizer.chat_template = QWEN3_TEMPLATE
    torch.manual_seed(seed)
    kw = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=tie,
    )
    if arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=16, **kw))
    else:
        model = LlamaForCausalLM(LlamaConfig(**kw))
    if template == "qwen3":
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory):
    """A tiny random Qwen3 with Qwen3's chat template and tokens (see make_tiny_model)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_qwen3"), arch="qwen3", template="qwen3")


@pytest.fixture(scope="session")
def tiny_games(tmp_path_factory):
    """Three small games (treasure hunter, coin collector, cooking), made in parallel once."""
    from oel import textworld_games

    folder = os.environ.get("OEL_TEST_GAMES") or tmp_path_factory.mktemp("games")  # tests/mutants.py: made once
    specs = [("treasure-l1-s0", "treasure", 1, 0), ("coin-l2-s1", "coin", 2, 1), ("cooking-l1-s2", "cooking", 1, 2)]
    textworld_games.make_games(str(folder), specs)
    return str(folder)
