"""Pseudo-queries for LMORT training: one sentence of each corpus document, paired with that document.

Labelled training queries cover a fraction of a corpus (SciFact: 728 queries, about 800 of 5,183 documents), and a
tuner trained only on them learns which documents those queries like (docs/results.md, "Dense retrieval": test
queries whose relevant documents were seen in training score far above the rest). Pairs built from the corpus itself (an
inverse-cloze-style task: a sentence of a document's abstract as the query, the whole document as its positive;
beyond the LMORT paper) make every document a positive somewhere. They use no queries or judgements, only the
corpus a retriever indexes anyway.

The sentence is fixed per document (a stable hash of its docid picks one of its sentences of at least
:data:`MIN_WORDS` words; the title when it has none), so the LM states of every pseudo-query are cached once and
the same pairs serve every seed. The positive is either the whole document (``document``: the sentence is in it,
word for word, when it falls inside the token budget) or the document without that sentence (``rest``: the inverse
cloze task of Lee et al., 2019, which makes the pair a matter of meaning rather than shared words).
"""
from __future__ import annotations

import re
import zlib
from typing import TYPE_CHECKING, Mapping, NamedTuple

if TYPE_CHECKING:
    from ..data.corpus import Document

MIN_WORDS = 6
POSITIVES = ("document", "rest")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.``/``!``/``?`` followed by whitespace and a capital, digit or bracket."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def pseudo_query(docid: str, title: str, text: str) -> str | None:
    """The pseudo-query of one document: a sentence of ``text`` with at least :data:`MIN_WORDS` words, chosen by
    ``crc32(docid)``; else the title; None when the document has neither."""
    return _choose(docid, title, split_sentences(text))


def _choose(docid: str, title: str, sentences: list[str]) -> str | None:
    """:func:`pseudo_query` over the already split ``sentences`` of the text."""
    long_enough = [s for s in sentences if len(s.split()) >= MIN_WORDS]
    if long_enough:
        return long_enough[zlib.crc32(docid.encode("utf-8")) % len(long_enough)]
    return title.strip() or None


class PseudoPair(NamedTuple):
    """One document's pseudo-query and the document's text without it (``Document.contents()`` with the sentence
    removed; the text alone when the query is the title; the whole document when nothing else would remain)."""

    query: str
    rest: str


def pseudo_pairs(corpus: Mapping[str, "Document"]) -> dict[str, PseudoPair]:
    """docid -> :class:`PseudoPair` for every document of ``corpus`` that has a pseudo-query (in corpus order)."""
    out = {}
    for docid, doc in corpus.items():
        title, text = doc.title or "", doc.text or ""
        sentences = split_sentences(text)
        query = _choose(docid, title, sentences)
        if not query:
            continue
        if query in sentences:
            body = " ".join(s for s in sentences if s != query)
            rest = f"{title} {body}" if title and body else (title or body)
        else:  # the title
            rest = text.strip()
        out[docid] = PseudoPair(query, rest or doc.contents())
    return out
