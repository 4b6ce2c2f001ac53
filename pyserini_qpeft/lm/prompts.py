"""Prompt building for query-likelihood scoring: the UPR template as token ids (no torch).

One (query, document) prompt is::

    [BOS?] {instruction}\\n Passage: {title} {text}. Please write a question based on this passage.\\n
    [hints: <N hint vectors>\\n]  Question: {query}

and splits into a query-independent **prefix** (BOS, instruction, template with the truncated passage: depends on
the document only) and a **suffix** (optional hints, ``Question:``, the query tokens).

Each piece is tokenized on its own and the pieces are concatenated, so passage truncation happens on tokens. An
untruncated passage is tokenized together with the template text after it, since BPE merges punctuation across
that seam (a passage ending in ``"."`` followed by ``". Please"``). For byte-level BPE tokenizers
(GPT-2/Llama-3/SmolLM style) this gives exactly the tokens of the joined text, which a test checks.

Whitespace before the passage and after ``Question:`` belongs to the next token (``" title"``, ``" what"`` in
byte-level BPE), so it is tokenized with the passage and with the query.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from ..data import Document
    from .scoring import ScorerConfig

DEFAULT_TEMPLATE = "Passage: {passage}. Please write a question based on this passage.\n"

# Named prompt wordings (``--prompt NAME``): the ScorerConfig fields each sets. ``question`` is UPR's; ``claim``
# asks for what fact-checking datasets (SciFact, Climate-FEVER) query with: a claim, not a question.
PROMPTS: dict[str, dict[str, str]] = {
    "question": {"template": DEFAULT_TEMPLATE, "question_prefix": "Question:"},
    "claim": {"template": "Passage: {passage}. Please write a claim based on this passage.\n",
              "question_prefix": "Claim:"},
}


def prompt_fields(name: str) -> dict[str, str]:
    """The :class:`~pyserini_qpeft.lm.scoring.ScorerConfig` fields of the named prompt; ValueError when unknown."""
    if name not in PROMPTS:
        raise ValueError(f"unknown prompt {name!r}; prompts: {', '.join(PROMPTS)}")
    return dict(PROMPTS[name])


def prompt_name(config: "ScorerConfig") -> str | None:
    """The name of the preset ``config`` uses (template and question prefix), or None for a custom wording."""
    for name, values in PROMPTS.items():
        if all(getattr(config, key) == value for key, value in values.items()):
            return name
    return None

# Memo tables are cleared when they grow past this many entries (bounded memory on huge reranks).
_MEMO_LIMIT = 200_000
# what PromptBuilder.follow tokenizes a piece behind (then drops): text that ends a line, as in a prompt
_ANCHOR = "\n"


@dataclass(frozen=True)
class PromptTokens:
    """Token ids of one document's prompt pieces.

    Attributes:
        prefix: BOS? + instruction + template with the truncated passage (the query-independent prompt).
        passage: the passage tokens hint modules read: the LM's truncated passage, or the first
            ``hint_passage_tokens`` when the config sets them.
    """

    prefix: tuple[int, ...]
    passage: tuple[int, ...]


@dataclass(frozen=True)
class SuffixPieces:
    """Fixed token ids of the suffix around the hint vectors and the query.

    Suffix layout per row: ``[hint_open, <n_hints vectors>, hint_close,] question, q_1 .. q_{Q-1}`` (the hint
    part only with a hint module; the last query token is never run, it predicts nothing scored).
    """

    question: tuple[int, ...]
    hint_open: tuple[int, ...] = ()
    hint_close: tuple[int, ...] = ()

    def query_start(self, n_hints: int | None) -> int:
        """Suffix position whose hidden state predicts the first query token (``None`` = no hint module).

        Position ``query_start + j`` predicts query token ``j``.
        """
        hint_part = 0 if n_hints is None else len(self.hint_open) + n_hints + len(self.hint_close)
        return hint_part + len(self.question) - 1


def passage_text(doc: "Document") -> str:
    """``"title text"``, or ``"text"`` when the title is empty (no stray space)."""
    title, text = (doc.title or "").strip(), (doc.text or "").strip()
    return f"{title} {text}" if title and text else (title or text)


def document_key(doc: "Document") -> tuple[str, str, str]:
    """What makes two documents the same for scoring: ``(docid, title, text)``."""
    return (doc.docid, doc.title or "", doc.text or "")


def truncate(ids: Sequence[int], budget: int) -> tuple[int, ...]:
    """The first ``budget`` ids."""
    return tuple(ids[:budget])


def split_lead(text: str) -> tuple[str, str]:
    """``(text without trailing whitespace, the trailing whitespace)``."""
    head = text.rstrip()
    return head, text[len(head):]


class PromptBuilder:
    """Token ids of prompt pieces under one tokenizer and :class:`~pyserini_qpeft.lm.scoring.ScorerConfig`.

    Args:
        tokenizer: a Hugging Face tokenizer (``tokenizer(text, add_special_tokens=False)["input_ids"]``).
        config: template, instruction, question prefix, hint markers and token budgets.
        hints: whether hint vectors are spliced in (a hint module is used); without, ``hint_open``/``hint_close``
            are empty.
    """

    def __init__(self, tokenizer, config: "ScorerConfig", hints: bool = False):
        self.tokenizer = tokenizer
        self.config = config
        self.pad_id = int(tokenizer.pad_token_id)
        add_bos = config.add_bos
        if add_bos is None:
            bos = tokenizer.bos_token_id
            probe = tokenizer("a", add_special_tokens=True)["input_ids"]
            add_bos = bos is not None and len(probe) > 0 and probe[0] == bos
        self.bos: tuple[int, ...] = (int(tokenizer.bos_token_id),) if add_bos else ()
        before, after = config.template.split("{passage}")
        if config.instruction:
            sep = "" if config.instruction[-1].isspace() else "\n"
            before = config.instruction + sep + before
        head, self.passage_lead = split_lead(before)
        self.head_ids = tuple(self.ids(head))
        self.tail = after
        self._anchor_ids = self.ids(_ANCHOR)  # what follow() drops
        self.tail_ids = tuple(self.follow(after))
        # a template tail holding special-token text cannot be tokenized together with a passage (see doc_tokens)
        self._tail_joins = self.follow(after, literal=True) == list(self.tail_ids)
        question, lead = split_lead(config.question_prefix)
        self.query_lead = lead or " "
        self.suffix = SuffixPieces(question=tuple(self.follow(question)),
                                   hint_open=tuple(self.follow(config.hint_open)) if hints else (),
                                   hint_close=tuple(self.follow(config.hint_close)) if hints else ())
        self._doc_memo: dict[tuple[str, str, str], PromptTokens] = {}
        self._query_memo: dict[str, tuple[int, ...]] = {}

    @property
    def question_ids(self) -> tuple[int, ...]:
        return self.suffix.question

    def ids(self, text: str, literal: bool = False) -> list[int]:
        """Token ids of ``text`` without added special tokens (``[]`` for an empty string).

        ``literal``: for passages and queries: text that spells a special token (``<|endoftext|>``, ``</s>``) is
        tokenized as text, so a document cannot put control tokens into the prompt. Template pieces (instruction,
        template, question prefix, hint markers) keep special-token text as the tokens it names."""
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=literal)["input_ids"])

    def follow(self, text: str, literal: bool = False) -> list[int]:
        """Token ids of ``text`` as it tokenizes after other text, for every piece but the prompt's first.

        SentencePiece-style tokenizers (Llama 2, Mistral: a ``Metaspace`` pre-tokenizer or a ``Prepend("▁")``
        normalizer) mark the start of every string they are given as a word start, so a piece tokenized on its own
        would carry a space the joined prompt does not have (``▁Question`` for ``\nQuestion``, an extra ``▁`` before
        the query). ``text`` is tokenized behind a newline and the newline's tokens are dropped; where that does not
        split cleanly (the newline merges with ``text``), the piece is tokenized on its own. For byte-level BPE
        tokenizers both ways give the same ids (SmolLM2's: ``docs/experiments/prompt-hashes.py`` over every SciFact and ArguAna text)."""
        if not text:
            return []
        anchor = self._anchor_ids
        both = self.ids(_ANCHOR + text, literal)
        if both[:len(anchor)] == anchor:
            return both[len(anchor):]
        return self.ids(text, literal)

    def doc_tokens(self, doc: "Document") -> PromptTokens:
        """Prefix and passage token ids of ``doc`` (memoised per :func:`document_key`)."""
        key = document_key(doc)
        hit = self._doc_memo.get(key)
        if hit is None:
            text = passage_text(doc)
            lead_text = self.passage_lead + text if text else ""
            full = self.follow(lead_text, literal=True)
            budget = self.config.max_passage_tokens
            passage = truncate(full, budget)
            if len(full) <= budget and self._tail_joins:
                # Untruncated: tokenize passage and template tail together, as the joined prompt text would be.
                body = tuple(self.follow(lead_text + self.tail, literal=True))
            else:
                body = passage + self.tail_ids
            hint_budget = self.config.hint_passage_tokens
            hint = passage if hint_budget is None else truncate(full, hint_budget)
            hit = PromptTokens(prefix=self.bos + self.head_ids + body, passage=hint)
            if len(self._doc_memo) > _MEMO_LIMIT:
                self._doc_memo.clear()
            self._doc_memo[key] = hit
        return hit

    def query_tokens(self, query: str) -> tuple[int, ...]:
        """Scored query token ids (with the separator after ``Question:``), truncated to the budget."""
        hit = self._query_memo.get(query)
        if hit is None:
            text = query.strip()
            if not text:
                raise ValueError("query text is empty")
            hit = truncate(self.follow(self.query_lead + text, literal=True), self.config.max_query_tokens)
            if len(self._query_memo) > _MEMO_LIMIT:
                self._query_memo.clear()
            self._query_memo[query] = hit
        return hit

    def prompt_ids(self, query: str, doc: "Document") -> list[int]:
        """The full token sequence (no hints) of one pair; for checks and debugging."""
        return [*self.doc_tokens(doc).prefix, *self.suffix.question, *self.query_tokens(query)]
