"""Zero-shot UPR on held-out training queries with a query-biased passage instead of the passage's first tokens.

usage: python docs/experiments/passage-window.py FIRST_STAGE_RUN OUTPUT_PREFIX VARIANT [VARIANT ...]

The fp32 demo cuts every passage at 64 tokens, so a SciFact abstract (median ~300 tokens) shows the LM its title
and background, rarely its findings. Each VARIANT is what the LM reads instead (always within the same token budget,
so the cost per pair is the same):
  first   the title and the text's first tokens (what the demo does)
  best    the title, then the text's sentences that share the most distinct query words (stop-words dropped, words
          compared on their first 5 letters), greedily until the budget is full, in document order
  window  the title, then the run of consecutive sentences that covers the most distinct query words within the budget
  tail    the title, then the text's last sentences that fit (query-independent: an abstract's findings come last)
Writes OUTPUT_PREFIX-VARIANT.trec (UPR, 64-token passages, fp32) for the first stage's top 20.
"""
from __future__ import annotations

import re
import sys

from pyserini_qpeft.data import BeirDataset, Document
from pyserini_qpeft.lm.backbone import LMConfig
from pyserini_qpeft.qpeft.tokens import STOPWORDS
from pyserini_qpeft.rerank import build_reranker
from pyserini_qpeft.rerank.base import DictDocStore
from pyserini_qpeft.types import Query, Run, read_run, write_run

BUDGET, DEPTH = 64, 20
SENTENCE = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"[a-z0-9]+")


def stems(text: str) -> set[str]:
    return {w[:5] for w in WORD.findall(text.lower()) if len(w) >= 2 and w not in STOPWORDS}


def select(doc: Document, query: str, variant: str, count) -> Document:
    """``doc`` with its text replaced by the variant's sentences (the title is kept)."""
    if variant == "first":
        return doc
    sentences = [s for s in SENTENCE.split(doc.text.strip()) if s]
    room = BUDGET - count(doc.title)
    terms = stems(query)
    matched = [stems(s) & terms for s in sentences]
    sizes = [count(" " + s) for s in sentences]
    if variant == "best":
        order = sorted(range(len(sentences)), key=lambda i: (-len(matched[i]), i))
        keep, used = [], 0
        for i in order:  # every sentence that still fits, best first (the best one always, cut if need be)
            if not keep or used + sizes[i] <= room:
                keep.append(i)
                used += sizes[i]
        chosen = sorted(keep)
    elif variant == "tail":
        chosen, used = [], 0
        for i in reversed(range(len(sentences))):  # the last sentences that fit whole (the last one always)
            if chosen and used + sizes[i] > room:
                break
            chosen.insert(0, i)
            used += sizes[i]
    else:  # window
        best, chosen = -1, [0]
        for start in range(len(sentences)):
            span, used, covered = [], 0, set()
            for i in range(start, len(sentences)):
                if used >= room:
                    break
                span.append(i)
                used += sizes[i]
                covered |= matched[i]
            if len(covered) > best:
                best, chosen = len(covered), span
    return Document(doc.docid, doc.title, " ".join(sentences[i] for i in chosen))


def main(first_stage: str, prefix: str, variants: list[str]) -> None:
    data = BeirDataset.find("scifact")
    corpus = data.load_corpus()
    queries = data.queries()
    run = read_run(first_stage)
    reranker = build_reranker("upr", lm=LMConfig(dtype="fp32"), scorer_overrides={"max_passage_tokens": BUDGET})
    tokenizer = reranker.lm.tokenizer
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0  # noqa: E731
    for variant in variants:
        out: dict = {}
        for qid, hits in run.hits.items():
            hits = hits[:DEPTH]
            store = DictDocStore({h.docid: select(corpus[h.docid], queries[qid], variant, count) for h in hits})
            out.update(reranker.rerank([Query(qid, queries[qid])], Run({qid: hits}), store, depth=DEPTH,
                                       progress=False).hits)
        write_run(Run(out), f"{prefix}-{variant}.trec", tag=f"upr-{variant}")
        print(f"{variant}: {len(out)} queries written", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
