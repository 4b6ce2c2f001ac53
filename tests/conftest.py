"""Shared fixtures: a tiny random Llama + a tokenizer trained on the fly, tiny BEIR datasets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

TOY_TEXTS = [
    "the cat sat on the mat", "dogs chase cats in the park", "protein folding depends on temperature",
    "vitamin d deficiency is linked to bone loss", "aspirin reduces the risk of heart attack",
    "cells divide by mitosis", "the immune system fights infection", "smoking causes lung cancer",
    "exercise improves heart health", "sleep affects memory consolidation", "what causes lung cancer",
    "does aspirin help the heart", "how do cells divide", "is vitamin d good for bones",
]


def build_tiny_lm(path: Path, vocab_size: int = 384, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random LlamaForCausalLM + BPE tokenizer to ``path`` (a normal HF folder)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TOY_TEXTS * 5 + ["Passage: Please write a question based on this passage. Question: hints:"],
                            trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=fast.vocab_size if hasattr(fast, "vocab_size") else len(fast), hidden_size=hidden,
                         intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    config.vocab_size = len(fast)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-llama"))


def build_remote_code_lm(base: Path, path: Path) -> Path:
    """``base`` (a tiny Llama folder) copied to ``path`` as a model that needs its own code: its config maps
    AutoConfig / AutoModelForCausalLM to classes in files beside it (``auto_map``, as such Hub repositories do), and
    those classes are Llama's under another model type, so its scores must equal ``base``'s."""
    import json
    import shutil

    shutil.copytree(base, path)
    (path / "configuration_tinyremote.py").write_text(
        "from transformers import LlamaConfig\n\n\nclass TinyRemoteConfig(LlamaConfig):\n    model_type = 'tinyremote'\n")
    (path / "modeling_tinyremote.py").write_text(
        "from transformers import LlamaForCausalLM, LlamaModel\n\nfrom .configuration_tinyremote import TinyRemoteConfig\n\n\n"
        "class TinyRemoteForCausalLM(LlamaForCausalLM):\n    config_class = TinyRemoteConfig\n\n\n"
        "class TinyRemoteModel(LlamaModel):\n    config_class = TinyRemoteConfig\n")
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="tinyremote", architectures=["TinyRemoteForCausalLM"],
                  auto_map={"AutoConfig": "configuration_tinyremote.TinyRemoteConfig",
                            "AutoModel": "modeling_tinyremote.TinyRemoteModel",
                            "AutoModelForCausalLM": "modeling_tinyremote.TinyRemoteForCausalLM"})
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="session")
def remote_code_lm_path(tiny_lm_path, tmp_path_factory) -> Path:
    return build_remote_code_lm(tiny_lm_path, tmp_path_factory.mktemp("remote") / "tiny-remote")


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_path):
    """A FrozenLM around the tiny random Llama, fp32 on CPU (exact comparisons)."""
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig

    return FrozenLM.load(LMConfig(model=str(tiny_lm_path), device="cpu", dtype="fp32"))


TOY_CORPUS = [
    {"_id": "d1", "title": "Lung cancer", "text": "smoking causes lung cancer"},
    {"_id": "d2", "title": "Aspirin", "text": "aspirin reduces the risk of heart attack"},
    {"_id": "d3", "title": "Mitosis", "text": "cells divide by mitosis"},
    {"_id": "d4", "title": "Vitamin D", "text": "vitamin d deficiency is linked to bone loss"},
    {"_id": "d5", "title": "", "text": "exercise improves heart health"},
    {"_id": "d6", "title": "Sleep", "text": "sleep affects memory consolidation"},
]
TOY_QUERIES = [
    {"_id": "q1", "text": "what causes lung cancer"},
    {"_id": "q2", "text": "does aspirin help the heart"},
    {"_id": "q3", "text": "how do cells divide"},
    {"_id": "q4", "text": "is vitamin d good for bones"},
]
TOY_QRELS = {"train": [("q1", "d1", 1), ("q2", "d2", 1)], "test": [("q3", "d3", 1), ("q4", "d4", 1), ("q2", "d5", 1)]}


def write_beir(root: Path) -> Path:
    """A tiny BEIR-format dataset folder (CRLF qrels with header, like the official zips)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w") as f:
        for doc in TOY_CORPUS:
            f.write(json.dumps({**doc, "metadata": {}}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for q in TOY_QUERIES:
            f.write(json.dumps({**q, "metadata": {}}) + "\n")
    (root / "qrels").mkdir(exist_ok=True)
    for split, rows in TOY_QRELS.items():
        with open(root / "qrels" / f"{split}.tsv", "w", newline="") as f:
            f.write("query-id\tcorpus-id\tscore\r\n")
            for q, d, r in rows:
                f.write(f"{q}\t{d}\t{r}\r\n")
    return root


@pytest.fixture()
def toy_beir(tmp_path) -> Path:
    """A tiny BEIR dataset folder named ``toy``."""
    return write_beir(tmp_path / "toy")
