"""Hash the scorer's prompt tokens for every SciFact and ArguAna document and query (SmolLM2's tokenizer), so that
two checkouts can be compared: a change to prompt tokenization that claims not to move SmolLM2's prompts must print
the same hashes. Three prompt configurations: UPR at 256 tokens, 64 tokens with Q-PEFT's hint markers, the claim
prompt at 128 tokens. Run from a checkout (its package first on the path), ~50 s on 2 cores:

    PYTHONPATH=. PYSERINI_QPEFT_DATA=../shared/data/beir .venv/bin/python docs/experiments/prompt-hashes.py

2026-12-06: identical before (02f243d) and after (8566484) PromptBuilder.follow and split_special_tokens:
scifact 350d4a1a8cf4f8a1 / b6b4d3aef621a3df / 32a765f235753392, arguana fb86d1cf3d2a63ee / 3ae25df8f6474026 /
0cdae957ca7f8b6b.
"""
import hashlib
import json

from pyserini_qpeft.data import BeirDataset, Document
from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
from pyserini_qpeft.lm.prompts import PromptBuilder, prompt_fields
from pyserini_qpeft.lm.scoring import ScorerConfig

lm = FrozenLM.load(LMConfig(model="smollm2", device="cpu", dtype="fp32"))
CONFIGS = {"upr256": (ScorerConfig(max_passage_tokens=256), False),
           "upr64-hints": (ScorerConfig(max_passage_tokens=64), True),
           "claim": (ScorerConfig(max_passage_tokens=128, **prompt_fields("claim")), True)}
for name in ("scifact", "arguana"):
    folder = BeirDataset.find(name).path
    docs = [json.loads(line) for line in open(folder / "corpus.jsonl", encoding="utf-8")]
    queries = [json.loads(line)["text"] for line in open(folder / "queries.jsonl", encoding="utf-8")]
    for label, (config, hints) in CONFIGS.items():
        builder = PromptBuilder(lm.tokenizer, config, hints=hints)
        digest = hashlib.sha256()
        for d in docs:
            tokens = builder.doc_tokens(Document(d["_id"], d.get("title", ""), d.get("text", "")))
            digest.update(repr((tokens.prefix, tokens.passage)).encode())
        for q in queries:
            if q.strip():
                digest.update(repr(builder.query_tokens(q)).encode())
        digest.update(repr(builder.suffix).encode())
        print(f"{name}/{label}: {digest.hexdigest()[:16]}")
