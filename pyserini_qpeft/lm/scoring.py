"""Batched query-likelihood scoring under a frozen causal LM: the hot path every reranker shares.

The score of a (query, document) pair is the mean log-probability of the query tokens given a prompt built from
the document (UPR)::

    [BOS?] {instruction}\\n Passage: {title} {text}. Please write a question based on this passage.\\n
    [hints: <N hint vectors>\\n]  Question: {query}

:class:`QueryLikelihoodScorer` wires three parts, one purpose each:

* :mod:`.prompts`: prompt building (template, instruction, passage text, truncation to the token budget, the
  fixed suffix pieces around hints and query), token ids only.
* :mod:`.planner`: the work plan (which pairs share a document prefix, length buckets, batch composition), pure
  Python; the one place documents are deduplicated.
* :mod:`.forward`: the forward pass (prefix KV cache, hint vectors, logits only at query positions).

Speed comes from running each document's prefix once and reusing its KV cache for every query that retrieved it
(~6 queries per document in a BEIR rerank), from sending only query positions through the LM head, and from
length bucketing. Padding and batch composition never change a score (see :mod:`.forward`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence

from .forward import PairBatch, QueryLikelihoodForward, collate, pad_rows
from .planner import ScoreGroup, dedupe, first_rows, plan_groups
from .prompts import DEFAULT_TEMPLATE, PromptBuilder, PromptTokens, document_key, passage_text

if TYPE_CHECKING:
    from torch import Tensor

    from .backbone import FrozenLM
    from .memo import PrefixMemo
    from ..data import Document

__all__ = ["DEFAULT_TEMPLATE", "HintModule", "PairBatch", "QueryLikelihoodScorer", "ScoreGroup", "ScorerConfig",
           "passage_text", "score_batches_together"]

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class ScorerConfig:
    """How prompts are built and batched.

    Attributes:
        template: the document part of the prompt; ``{passage}`` (exactly once) becomes ``"title text"``, or
            ``"text"`` when the title is empty.
        instruction: text before the template; a newline is put between them unless it ends in whitespace.
        question_prefix: text right before the query; the whitespace it ends with (default one space) separates
            it from the query and is scored as part of the query tokens' first token.
        hint_open, hint_close: text around hint vectors (only used with a hint module).
        max_passage_tokens: passage ("title text") token budget; longer passages are cut to their first tokens.
        hint_passage_tokens: the passage tokens a hint module reads (the first N; None: the passage the LM reads,
            ``max_passage_tokens``). Larger than that, the module sees text the LM's passage cut away (beyond
            the papers); the LM's prompt is the same either way.
        max_query_tokens: query token budget (longer queries are cut).
        batch_size: (query, document) pairs per suffix forward.
        prefix_batch_size: documents per prefix forward (a "group"; all pairs of a group share its KV cache).
        cache_prefixes: reuse a document's prefix KV cache across its queries; False runs prefix + suffix in one
            forward per pair batch (slower; used as a cross-check).
        add_bos: prepend the tokenizer's BOS token; None follows the tokenizer (adds it iff the tokenizer adds it
            when encoding with special tokens).
    """

    template: str = DEFAULT_TEMPLATE
    instruction: str = ""
    question_prefix: str = "Question:"
    hint_open: str = "hints:"
    hint_close: str = "\n"
    max_passage_tokens: int = 128
    hint_passage_tokens: int | None = None
    max_query_tokens: int = 64
    batch_size: int = 64
    prefix_batch_size: int = 32
    cache_prefixes: bool = True
    add_bos: bool | None = None

    def __post_init__(self) -> None:
        if self.template.count("{passage}") != 1:
            raise ValueError(f"template must contain '{{passage}}' exactly once, got {self.template!r}")
        if not self.question_prefix.strip():
            raise ValueError(f"question_prefix must contain non-whitespace text, got {self.question_prefix!r}")
        for name in ("max_passage_tokens", "max_query_tokens", "batch_size", "prefix_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        hint = self.hint_passage_tokens
        if hint is not None and (not isinstance(hint, int) or isinstance(hint, bool) or hint < 1):
            raise ValueError(f"hint_passage_tokens must be None or a positive integer, got {hint!r}")
        if self.add_bos not in (None, True, False):
            raise ValueError(f"add_bos must be None, True or False, got {self.add_bos!r}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class HintModule(Protocol):
    """A trainable module (``nn.Module``) producing hint vectors spliced into the prompt before ``Question:``."""

    def __call__(self, query_ids: "Tensor", query_mask: "Tensor", passage_ids: "Tensor",
                 passage_mask: "Tensor") -> tuple["Tensor", "Tensor"]: ...

    def forward(self, query_ids: "Tensor", query_mask: "Tensor", passage_ids: "Tensor",
                passage_mask: "Tensor") -> tuple["Tensor", "Tensor"]:
        """``[B, Q]`` query ids/mask and ``[B, D]`` passage ids/mask (right padded) -> hints ``[B, N, H]`` (any
        float dtype; cast to the LM's dtype by the scorer) and hint_mask ``[B, N]`` (1 = real hint)."""
        ...


@dataclass(frozen=True)
class _Plan:
    """A work plan with the token ids it was made from (so nothing is tokenized or looked up twice)."""

    groups: list[ScoreGroup]
    doc_tokens: list[PromptTokens]  # per distinct document
    docs: Sequence["Document"]  # the distinct documents
    doc_of: Sequence[int]  # pair -> distinct document
    query_tokens: list[tuple[int, ...]]  # per pair


class QueryLikelihoodScorer:
    """Scores (query, document) pairs by mean query-token log-likelihood under a frozen LM.

    Args:
        lm: the frozen LM (any Hugging Face causal LM with ``get_decoder()`` and ``get_output_embeddings()``).
        config: prompt and batching options.
        hint_module: optional trainable module whose hint vectors are spliced before ``Question:`` (Q-PEFT).
        prefix_memo: optional :class:`~pyserini_qpeft.lm.memo.PrefixMemo`: group prefix caches kept across
            :meth:`score_batches` calls (pairs scored repeatedly, e.g. every epoch's dev evaluation; it may be
            shared by scorers of the same LM).

    Attributes:
        prompts: the :class:`~pyserini_qpeft.lm.prompts.PromptBuilder` (token ids of prompt pieces).
        engine: the :class:`~pyserini_qpeft.lm.forward.QueryLikelihoodForward` (the model side).
    """

    def __init__(self, lm: "FrozenLM", config: ScorerConfig | None = None, hint_module: HintModule | None = None,
                 prefix_memo: "PrefixMemo | None" = None):
        self.lm = lm
        self.config = config or ScorerConfig()
        self.prefix_memo = prefix_memo
        self.prompts = PromptBuilder(lm.tokenizer, self.config, hints=hint_module is not None)
        self.engine = QueryLikelihoodForward(lm, self.prompts.suffix, hint_module)
        self._check_context(hint_module)

    def _check_context(self, hint_module: HintModule | None) -> None:
        """Refuse budgets whose longest prompt (full passage and query budgets, every hint) exceeds the LM's
        context, before any work: past it a learned position table fails mid-run and a rotary one runs untrained."""
        check = getattr(self.lm, "check_context", None)
        if check is None:
            return
        p, c = self.prompts, self.config
        hints = 0
        if hint_module is not None:
            bound = getattr(hint_module, "max_hints", None)
            hints = (len(p.suffix.hint_open) + len(p.suffix.hint_close)
                     + (bound(c.max_query_tokens) if bound else 0))
        fixed = len(p.bos) + len(p.head_ids) + len(p.tail_ids) + len(p.suffix.question) + hints
        longest = fixed + c.max_passage_tokens + c.max_query_tokens
        room = (self.lm.max_positions or 0) - fixed - c.max_query_tokens
        check(longest, f"the longest prompt ({c.max_passage_tokens} passage + {c.max_query_tokens} query + "
                       f"{fixed} template{' and hint' if hints else ''} tokens)",
              f"lower --max-passage-tokens (at most {room} fit)" if room > 0 else "this model's context is too short "
              "for the prompt")

    @property
    def hint_module(self) -> HintModule | None:
        return self.engine.hint_module

    @property
    def pad_id(self) -> int:
        return self.prompts.pad_id

    # ------------------------------------------------------------------------------------------------------
    # Tokens and batches

    def doc_tokens(self, doc: "Document") -> PromptTokens:
        """Prefix and passage token ids of ``doc`` (memoised per (docid, title, text))."""
        return self.prompts.doc_tokens(doc)

    def query_tokens(self, query: str) -> tuple[int, ...]:
        """Scored query token ids (with the separator after ``Question:``), truncated to the budget."""
        return self.prompts.query_tokens(query)

    def prompt_ids(self, query: str, doc: "Document") -> list[int]:
        """The full token sequence (no hints) of one pair; for checks and debugging."""
        return self.prompts.prompt_ids(query, doc)

    def _batch(self, prefixes: Sequence[Sequence[int]], passages: Sequence[Sequence[int]],
               queries: Sequence[Sequence[int]], doc_group: Sequence[int]) -> PairBatch:
        return collate(prefixes, passages, queries, doc_group, self.pad_id, self.lm.device)

    def encode(self, queries: Sequence[str], docs: Sequence["Document"]) -> PairBatch:
        """Tokenize B pairs (``queries[i]`` with ``docs[i]``) into a :class:`PairBatch` on the LM's device; rows
        with the same prefix tokens share one prefix forward."""
        if len(queries) != len(docs):
            raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
        if not queries:
            raise ValueError("cannot encode an empty batch")
        toks = [self.prompts.doc_tokens(d) for d in docs]
        return self._batch([t.prefix for t in toks], [t.passage for t in toks],
                           [self.prompts.query_tokens(q) for q in queries], first_rows([t.prefix for t in toks]))

    # ------------------------------------------------------------------------------------------------------
    # Model

    def forward(self, batch: PairBatch) -> "Tensor":
        """``[B]`` mean log-probability of each row's query tokens (float32).

        Differentiable w.r.t. the hint module's parameters. With ``cache_prefixes`` the prefixes of distinct
        documents (distinct ``doc_group`` values) run once under ``torch.no_grad`` (nothing trainable precedes
        the hints).
        """
        import torch

        if not self.config.cache_prefixes:
            return self._forward_full(batch)
        uniq, rows = torch.unique(batch.doc_group, return_inverse=True)
        with torch.no_grad():
            cache = self.engine.prefix_cache(batch.prefix_ids[uniq], batch.prefix_mask[uniq])
        return self._forward_suffix(batch, cache, rows, batch.prefix_mask[uniq])

    __call__ = forward

    def _forward_suffix(self, batch: PairBatch, cache, rows: "Tensor", prefix_mask: "Tensor") -> "Tensor":
        """``[B]`` scores on top of a prefix cache (see :meth:`QueryLikelihoodForward.forward_suffix`)."""
        return self.engine.forward_suffix(batch, cache, rows, prefix_mask)

    def _forward_full(self, batch: PairBatch) -> "Tensor":
        """``[B]`` scores with prefix and suffix in one forward (no cache)."""
        return self.engine.forward_full(batch)

    # ------------------------------------------------------------------------------------------------------
    # Inference

    def _make_plan(self, queries: Sequence[str], docs: Sequence["Document"],
                   doc_index: Sequence[int] | None) -> _Plan:
        if doc_index is None:
            if len(queries) != len(docs):
                raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
            distinct = dedupe([document_key(d) for d in docs])
            doc_of: Sequence[int] = distinct.slot
            docs = [docs[i] for i in distinct.first]
        else:
            if len(queries) != len(doc_index):
                raise ValueError(f"got {len(queries)} queries but {len(doc_index)} document indices")
            doc_of = doc_index
        qtok = [self.prompts.query_tokens(q) for q in queries]
        dtok = [self.prompts.doc_tokens(d) for d in docs]
        groups = plan_groups(doc_of, [len(t.prefix) for t in dtok], [len(t) for t in qtok], self.config.batch_size,
                             self.config.prefix_batch_size)
        return _Plan(groups, dtok, docs, doc_of, qtok)

    def plan(self, queries: Sequence[str], docs: Sequence["Document"],
             doc_index: Sequence[int] | None = None) -> list[ScoreGroup]:
        """Deterministic work plan for scoring ``queries[i]`` with its document (see :mod:`.planner`).

        Without ``doc_index``, ``docs[i]`` is pair i's document and equal documents (same docid, title and text)
        are found here; with it, ``docs`` are distinct documents already (the caller deduplicated them) and pair i
        uses ``docs[doc_index[i]]``. ``ScoreGroup.docs`` index the distinct documents.
        """
        return self._make_plan(queries, docs, doc_index).groups

    def score_batches(self, queries: Sequence[str], docs: Sequence["Document"],
                      done: Callable[[int], bool] | None = None, progress: bool = False,
                      doc_index: Sequence[int] | None = None, shard: tuple[int, int] | None = None
                      ) -> Iterator[tuple[ScoreGroup, tuple[int, ...], list[float]]]:
        """Score batch by batch (see :meth:`plan` for ``docs`` and ``doc_index``); yields ``(group, pair indices,
        their scores)`` for each suffix batch of the plan.

        ``done(i)`` true for every pair of a batch skips that batch (resume); a group whose batches are all done
        is skipped with its prefix forward. The batches never change, so a pair's score does not depend on what
        was skipped: a resumed job is bit-identical to an uninterrupted one. ``shard=(k, n)`` scores only the
        groups ``g`` with ``g.index % n == k`` (whole document groups, round robin), so n shards together compute
        exactly the batches of one serial job.
        """
        for _, group, chunk, scores in score_batches_together([self], queries, docs, [done], progress, doc_index,
                                                              shard):
            yield group, chunk, scores

    def prefix_mismatch(self, other: "QueryLikelihoodScorer") -> str | None:
        """Why ``other`` cannot reuse this scorer's document prefix caches and work plan (None: it can).

        It can when both score with the same loaded LM, the same document prefix tokens and the same plan: every
        :class:`ScorerConfig` field but the hint markers and the hint module's passage (which only change the
        suffix) is equal.
        """
        if other.lm is not self.lm:
            return "they do not share one loaded LM"
        mine, theirs = self.config.to_dict(), other.config.to_dict()
        differ = [k for k in mine if k not in _SUFFIX_ONLY and mine[k] != theirs[k]]
        if differ:
            return ", ".join(f"{k} {mine[k]!r} vs {theirs[k]!r}" for k in differ)
        if not self.config.cache_prefixes:
            return "cache_prefixes is off"
        return None

    def _group_cache(self, prefixes: Sequence[Sequence[int]], prefix_ids: "Tensor", prefix_mask: "Tensor"):
        """The KV cache of one group's ``[U, P]`` prefixes: from :attr:`prefix_memo` when it holds them, else run
        (and offered to the memo)."""
        memo = self.prefix_memo
        if memo is None:
            return self.engine.prefix_cache(prefix_ids, prefix_mask)
        key = memo.key(prefixes, prefix_ids.device, self.lm.dtype)
        cache = memo.get(key)
        if cache is None:
            cache = self.engine.prefix_cache(prefix_ids, prefix_mask)
            memo.put(key, cache)
        return cache

    def score(self, queries: Sequence[str], docs: Sequence["Document"], progress: bool = False,
              doc_index: Sequence[int] | None = None) -> list[float]:
        """Mean query log-likelihood of each pair (see :meth:`plan` for ``docs`` and ``doc_index``), in input
        order; deterministic for a given input."""
        out = [0.0] * len(queries)
        for _, pairs, scores in self.score_batches(queries, docs, progress=progress, doc_index=doc_index):
            for i, s in zip(pairs, scores):
                out[i] = s
        return out


_SUFFIX_ONLY = frozenset({"hint_open", "hint_close", "hint_passage_tokens"})
"""ScorerConfig fields that only change the prompt after the document prefix (the hint markers, and the passage
the hints are made from)."""


def score_batches_together(scorers: Sequence[QueryLikelihoodScorer], queries: Sequence[str],
                           docs: Sequence["Document"], done: Sequence[Callable[[int], bool] | None] | None = None,
                           progress: bool = False, doc_index: Sequence[int] | None = None,
                           shard: tuple[int, int] | None = None
                           ) -> Iterator[tuple[int, ScoreGroup, tuple[int, ...], list[float]]]:
    """Score the same pairs with several scorers that share each document group's prefix forward (e.g. UPR and
    Q-PEFT rerankers of one run: the hints come after the document, so the prefix KV cache -- most of the cost --
    is the same for all of them); yields ``(scorer index, group, pair indices, scores)`` per suffix batch.

    Every scorer computes exactly the batches it would compute alone (:meth:`QueryLikelihoodScorer.score_batches`,
    the one-scorer case of this function) on exactly the prefix cache it would compute alone, so its scores are
    bit-identical to a separate run. ``done[k]`` skips scorer k's finished batches; a group is skipped when every
    scorer has finished it. The scorers must pass :meth:`QueryLikelihoodScorer.prefix_mismatch` against the first
    (ValueError otherwise).
    """
    import torch
    from tqdm.auto import tqdm

    lead = scorers[0]
    for other in scorers[1:]:
        reason = lead.prefix_mismatch(other)
        if reason:
            raise ValueError(f"these scorers cannot share document prefixes: {reason}")
    done = list(done) if done is not None else [None] * len(scorers)
    if len(done) != len(scorers):
        raise ValueError(f"got {len(done)} done callbacks for {len(scorers)} scorers")
    plan = lead._make_plan(queries, docs, doc_index)
    groups = [g for g in plan.groups if shard is None or g.index % shard[1] == shard[0]]
    todo = []
    for group in groups:
        per_scorer = [[c for c in group.batches if not (d and all(d(i) for i in c))] for d in done]
        if any(per_scorer):
            todo.append((group, per_scorer))
    modules = [s.hint_module for s in scorers]
    was_training = [bool(getattr(hm, "training", False)) for hm in modules]
    for hm in modules:
        if hm is not None and hasattr(hm, "eval"):
            hm.eval()
    bar = tqdm(total=sum(len(c) for _, per in todo for chunks in per for c in chunks), unit="pair",
               disable=not progress, desc="scoring", dynamic_ncols=True)
    device = lead.lm.device
    pending = None  # the previous batch: read back only after the next one is queued (GPU overlap)
    try:
        with torch.inference_mode():
            for group, per_scorer in todo:
                local = {j: k for k, j in enumerate(group.docs)}
                dtok = [plan.doc_tokens[j] for j in group.docs]
                prefix_ids, prefix_mask = pad_rows([t.prefix for t in dtok], lead.pad_id, left=True)
                prefix_ids, prefix_mask = prefix_ids.to(device), prefix_mask.to(device)
                cache = None
                if lead.config.cache_prefixes:
                    cache = lead._group_cache([t.prefix for t in dtok], prefix_ids, prefix_mask)
                for which, chunks in enumerate(per_scorer):
                    scorer = scorers[which]
                    # a hint module reads its own passage budget (the prefixes are the lead's)
                    own = dtok
                    if (scorer.hint_module is not None
                            and scorer.config.hint_passage_tokens != lead.config.hint_passage_tokens):
                        own = [scorer.prompts.doc_tokens(plan.docs[j]) for j in group.docs]
                    for chunk in chunks:
                        slots = [local[plan.doc_of[i]] for i in chunk]
                        batch = scorer._batch([dtok[s].prefix for s in slots], [own[s].passage for s in slots],
                                              [plan.query_tokens[i] for i in chunk], first_rows(slots))
                        if cache is not None:
                            rows = torch.tensor(slots, dtype=torch.long, device=batch.query_ids.device)
                            out = scorer._forward_suffix(batch, cache, rows, prefix_mask)
                        else:
                            out = scorer._forward_full(batch)
                        # On a GPU the kernels above run asynchronously: collate the next batch while they run
                        # and read scores back one batch late (on a CPU this changes nothing).
                        if pending is not None:
                            yield _read_back(pending, bar)
                        pending = (which, group, tuple(chunk), out)
            if pending is not None:
                yield _read_back(pending, bar)
    finally:
        bar.close()
        for hm, was in zip(modules, was_training):
            if hm is not None and hasattr(hm, "train"):
                hm.train(was)


def _read_back(pending, bar) -> tuple[int, ScoreGroup, tuple[int, ...], list[float]]:
    which, group, chunk, out = pending
    scores = [float(s) for s in out.tolist()]
    bar.update(len(chunk))
    return which, group, chunk, scores
