"""Batched query-likelihood scoring under a frozen causal LM: the hot path every reranker shares.

The score of a (query, document) pair is the mean log-probability of the query tokens given a prompt built from
the document (UPR)::

    [BOS?] {instruction}\\n Passage: {title} {text}. Please write a question based on this passage.\\n
    [hints: <N hint vectors>\\n]  Question: {query}

The prompt splits into a query-independent **prefix** (everything up to and including the template; depends on
the document only) and a **suffix** (optional hints, ``Question:``, the query tokens). Speed comes from three
things:

* **Prefix KV caching.** A document's prefix is run once; its key/value cache is reused (rows selected per layer)
  for every query that retrieved the document. In a BEIR rerank a document is retrieved by ~6 queries on average.
* **No full-vocabulary logits for passage positions.** The LM body runs without its head; only the hidden states
  that predict query tokens go through the LM head (the head is 49k x 576 for SmolLM2: full logits for a
  32 x 160 batch would be 1 GB of floats).
* **Length bucketing.** Documents are sorted by prefix length and pairs by query length, so little padding is run.

Padding never changes a score: the prefix is left padded, the suffix right padded, attention masks cover both
and position ids are ``cumsum(mask) - 1`` over the whole sequence, so every real token sees the same positions as
in an unpadded run. Each piece of the prompt is tokenized on its own and the pieces are concatenated (passage
truncation happens on tokens; an untruncated passage is tokenized together with the template text after it, since
BPE merges punctuation across that seam). For byte-level BPE tokenizers (GPT-2/Llama-3/SmolLM style) this gives
exactly the tokens of the joined text, which a test checks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .backbone import FrozenLM
    from .data import Document

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "Passage: {passage}. Please write a question based on this passage.\n"


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


@dataclass
class PairBatch:
    """Tensors for B (query, document) pairs, built by :meth:`QueryLikelihoodScorer.encode`.

    Attributes:
        prefix_ids, prefix_mask: ``[B, P]`` LEFT padded instruction + passage prompt (query independent).
        passage_ids, passage_mask: ``[B, D]`` right padded truncated passage tokens (input of hint modules).
        query_ids, query_mask: ``[B, Q]`` right padded scored query tokens (each row has at least one).
        doc_group: ``[B]`` long, index of the first row holding the same document (rows with equal values share
            one prefix forward).
    """

    prefix_ids: "Tensor"
    prefix_mask: "Tensor"
    passage_ids: "Tensor"
    passage_mask: "Tensor"
    query_ids: "Tensor"
    query_mask: "Tensor"
    doc_group: "Tensor"

    def __len__(self) -> int:
        return int(self.query_ids.shape[0])

    def to(self, device: "str | torch.device") -> "PairBatch":
        return PairBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass(frozen=True)
class _Tokens:
    """Token ids of one document's prompt pieces."""

    prefix: tuple[int, ...]  # BOS? + instruction + template with the truncated passage
    passage: tuple[int, ...]  # truncated passage tokens only


@dataclass(frozen=True)
class ScoreGroup:
    """A deterministic unit of work: a few documents (one prefix forward) and all pairs that use them.

    ``pairs`` are indices into the scored input, in the order they are computed; ``batches`` split them into
    suffix batches.
    """

    index: int
    docs: tuple[int, ...]
    pairs: tuple[int, ...]
    batches: tuple[tuple[int, ...], ...]


def passage_text(doc: "Document") -> str:
    """``"title text"``, or ``"text"`` when the title is empty (no stray space)."""
    title, text = (doc.title or "").strip(), (doc.text or "").strip()
    return f"{title} {text}" if title and text else (title or text)


class QueryLikelihoodScorer:
    """Scores (query, document) pairs by mean query-token log-likelihood under a frozen LM.

    Args:
        lm: the frozen LM (any Hugging Face causal LM with ``get_decoder()`` and ``get_output_embeddings()``).
        config: prompt and batching options.
        hint_module: optional trainable module whose hint vectors are spliced before ``Question:`` (Q-PEFT).
    """

    def __init__(self, lm: "FrozenLM", config: ScorerConfig | None = None, hint_module: HintModule | None = None):
        self.lm = lm
        self.config = config or ScorerConfig()
        self.hint_module = hint_module
        tok = lm.tokenizer
        cfg = self.config
        self.pad_id = int(tok.pad_token_id)
        add_bos = cfg.add_bos
        if add_bos is None:
            bos = tok.bos_token_id
            probe = tok("a", add_special_tokens=True)["input_ids"]
            add_bos = bos is not None and len(probe) > 0 and probe[0] == bos
        self._bos: tuple[int, ...] = (int(tok.bos_token_id),) if add_bos else ()
        before, after = cfg.template.split("{passage}")
        if cfg.instruction:
            sep = "" if cfg.instruction[-1].isspace() else "\n"
            before = cfg.instruction + sep + before
        # Whitespace before the passage belongs to the passage's first token (" title" in byte-level BPE).
        head = before.rstrip()
        self._passage_lead = before[len(head):]
        self._head_ids = self._ids(head)
        self._tail = after
        self._tail_ids = self._ids(after)
        qp = cfg.question_prefix.rstrip()
        self._query_lead = cfg.question_prefix[len(qp):] or " "
        self._question_ids = self._ids(qp)
        self._hint_open_ids = self._ids(cfg.hint_open) if hint_module is not None else []
        self._hint_close_ids = self._ids(cfg.hint_close) if hint_module is not None else []
        model = lm.model
        self._body = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
        self._head = model.get_output_embeddings()
        if self._head is None:
            from .errors import ModelError

            raise ModelError(f"{lm.model_id}: model has no output embeddings (LM head); not a causal LM")
        self._softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        self._doc_cache: dict[tuple[str, str, str], _Tokens] = {}
        self._query_cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------------------------------------------
    # Tokenization

    def _ids(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    def doc_tokens(self, doc: "Document") -> _Tokens:
        """Prefix and passage token ids of ``doc`` (memoised per (docid, title, text))."""
        key = (doc.docid, doc.title or "", doc.text or "")
        hit = self._doc_cache.get(key)
        if hit is None:
            text = passage_text(doc)
            full = self._ids(self._passage_lead + text if text else "")
            passage = full[: self.config.max_passage_tokens]
            if len(full) <= self.config.max_passage_tokens:
                # Untruncated: tokenize passage and template tail together, as the joined prompt text would be
                # (BPE merges punctuation runs across the seam, e.g. a passage ending in "." + ". Please").
                body = self._ids((self._passage_lead + text if text else "") + self._tail)
            else:
                body = [*passage, *self._tail_ids]
            prefix = (*self._bos, *self._head_ids, *body)
            hit = _Tokens(prefix=tuple(prefix), passage=tuple(passage))
            if len(self._doc_cache) > 200_000:
                self._doc_cache.clear()
            self._doc_cache[key] = hit
        return hit

    def query_tokens(self, query: str) -> tuple[int, ...]:
        """Scored query token ids (with the separator after ``Question:``), truncated to the budget."""
        hit = self._query_cache.get(query)
        if hit is None:
            text = query.strip()
            if not text:
                raise ValueError("query text is empty")
            hit = tuple(self._ids(self._query_lead + text)[: self.config.max_query_tokens])
            if len(self._query_cache) > 200_000:
                self._query_cache.clear()
            self._query_cache[query] = hit
        return hit

    def prompt_ids(self, query: str, doc: "Document") -> list[int]:
        """The full token sequence (no hints) of one pair; for checks and debugging."""
        return [*self.doc_tokens(doc).prefix, *self._question_ids, *self.query_tokens(query)]

    # ------------------------------------------------------------------------------------------------------
    # Batches

    def _batch(self, prefixes: Sequence[Sequence[int]], passages: Sequence[Sequence[int]],
               queries: Sequence[Sequence[int]], doc_group: Sequence[int]) -> PairBatch:
        import torch

        def pad(rows: Sequence[Sequence[int]], left: bool) -> tuple["Tensor", "Tensor"]:
            width = max(1, max((len(r) for r in rows), default=0))
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                if row:
                    sl = slice(width - len(row), width) if left else slice(0, len(row))
                    ids[i, sl] = torch.tensor(row, dtype=torch.long)
                    mask[i, sl] = 1
            return ids, mask

        prefix_ids, prefix_mask = pad(prefixes, left=True)
        passage_ids, passage_mask = pad(passages, left=False)
        query_ids, query_mask = pad(queries, left=False)
        device = self.lm.device
        return PairBatch(prefix_ids, prefix_mask, passage_ids, passage_mask, query_ids, query_mask,
                         torch.tensor(list(doc_group), dtype=torch.long)).to(device)

    def encode(self, queries: Sequence[str], docs: Sequence["Document"]) -> PairBatch:
        """Tokenize B pairs (``queries[i]`` with ``docs[i]``) into a :class:`PairBatch` on the LM's device."""
        if len(queries) != len(docs):
            raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
        if not queries:
            raise ValueError("cannot encode an empty batch")
        toks = [self.doc_tokens(d) for d in docs]
        first: dict[tuple[int, ...], int] = {}
        group = [first.setdefault(t.prefix, i) for i, t in enumerate(toks)]
        return self._batch([t.prefix for t in toks], [t.passage for t in toks],
                           [self.query_tokens(q) for q in queries], group)

    # ------------------------------------------------------------------------------------------------------
    # Model

    def _suffix(self, batch: PairBatch) -> tuple["Tensor", "Tensor", int]:
        """Suffix embeddings ``[B, S, H]``, mask ``[B, S]`` and the suffix index predicting the first query token.

        Layout per row: ``[hints: (N hints) \n] Question: q_1 .. q_{Q-1}`` (query right padded; the last query
        column is dropped since it predicts nothing scored)."""
        import torch

        lm, b = self.lm, len(batch)
        device = batch.query_ids.device

        def fixed(ids: list[int]) -> tuple["Tensor", "Tensor"]:
            t = torch.tensor(ids, dtype=torch.long, device=device).unsqueeze(0).expand(b, -1)
            return lm.embed(t), torch.ones_like(t)

        parts, masks = [], []
        if self.hint_module is not None:
            hints, hint_mask = self.hint_module(batch.query_ids, batch.query_mask, batch.passage_ids,
                                                batch.passage_mask)
            if hints.dim() != 3 or hints.shape[0] != b or hints.shape[2] != lm.hidden_size:
                raise ValueError(f"hint module returned hints of shape {tuple(hints.shape)}, "
                                 f"expected [{b}, N, {lm.hidden_size}]")
            if tuple(hint_mask.shape) != tuple(hints.shape[:2]):
                raise ValueError(f"hint_mask shape {tuple(hint_mask.shape)} does not match hints "
                                 f"{tuple(hints.shape[:2])}")
            for ids, emb in ((self._hint_open_ids, None), (None, hints), (self._hint_close_ids, None)):
                if emb is not None:
                    parts.append(emb.to(lm.dtype))
                    masks.append(hint_mask.to(device=device, dtype=torch.long))
                elif ids:
                    e, m = fixed(ids)
                    parts.append(e)
                    masks.append(m)
        e, m = fixed(self._question_ids)
        parts.append(e)
        masks.append(m)
        start = sum(p.shape[1] for p in parts) - 1
        # The last query token predicts nothing that is scored: it is not run (its column is never needed).
        parts.append(lm.embed(batch.query_ids[:, :-1]))
        masks.append(batch.query_mask[:, :-1].long())
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1), start

    def _query_logprobs(self, hidden: "Tensor", batch: PairBatch, start: int) -> "Tensor":
        """Mean log P(query token) per row from suffix hidden states ``[B, S, H]`` -> ``[B]`` float32."""
        import torch

        q = batch.query_ids.shape[1]
        states = hidden[:, start:start + q]  # position start + j predicts query token j
        keep = batch.query_mask.bool()
        logits = self._head(states[keep]).float()  # [N, V] only for real query tokens
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        logp = torch.log_softmax(logits, dim=-1).gather(-1, batch.query_ids[keep].unsqueeze(-1)).squeeze(-1)
        total = torch.zeros(keep.shape, dtype=logp.dtype, device=logp.device)
        total[keep] = logp
        return total.sum(1) / keep.sum(1).clamp(min=1)

    @staticmethod
    def _positions(mask: "Tensor") -> "Tensor":
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def _prefix_cache(self, prefix_ids: "Tensor", prefix_mask: "Tensor"):
        """Run the body over ``[U, P]`` prefixes; returns their KV cache (a transformers ``DynamicCache``)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.lm.model.config)
        out = self._body(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=self._positions(prefix_mask),
                         past_key_values=cache, use_cache=True)
        return out.past_key_values

    def _select_cache(self, cache, rows: "Tensor"):
        """A new cache holding rows ``rows`` of ``cache`` (per layer index_select on the batch dim)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        data = [(layer.keys.index_select(0, rows), layer.values.index_select(0, rows)) for layer in cache.layers]
        new = DynamicCache(config=self.lm.model.config)
        if len(new.layers) == len(data) and all(type(layer) is DynamicLayer for layer in new.layers):
            # Adopt the selected tensors as they are (the ddp_cache_data route concatenates them onto an empty
            # tensor: one more copy of the whole cache per batch).
            for layer, (keys, values) in zip(new.layers, data):
                layer.lazy_initialization(keys, values)
                layer.keys, layer.values = keys, values
            return new
        return DynamicCache(ddp_cache_data=data, config=self.lm.model.config)

    def _forward_suffix(self, batch: PairBatch, cache, rows: "Tensor", prefix_mask: "Tensor") -> "Tensor":
        import torch

        embeds, mask, start = self._suffix(batch)
        full_mask = torch.cat([prefix_mask.index_select(0, rows), mask], dim=1)
        positions = self._positions(full_mask)[:, prefix_mask.shape[1]:]
        out = self._body(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions,
                         past_key_values=self._select_cache(cache, rows), use_cache=True)
        return self._query_logprobs(out.last_hidden_state, batch, start)

    def _forward_full(self, batch: PairBatch) -> "Tensor":
        """Plain path: prefix and suffix in one forward (no cache)."""
        import torch

        embeds, mask, start = self._suffix(batch)
        p = batch.prefix_ids.shape[1]
        full = torch.cat([self.lm.embed(batch.prefix_ids), embeds], dim=1)
        full_mask = torch.cat([batch.prefix_mask.long(), mask], dim=1)
        out = self._body(inputs_embeds=full, attention_mask=full_mask, position_ids=self._positions(full_mask))
        return self._query_logprobs(out.last_hidden_state[:, p:], batch, start)

    def forward(self, batch: PairBatch) -> "Tensor":
        """``[B]`` mean log-probability of each row's query tokens (float32).

        Differentiable w.r.t. the hint module's parameters. With ``cache_prefixes`` the prefixes of distinct
        documents run once under ``torch.no_grad`` (nothing trainable precedes the hints).
        """
        import torch

        if not self.config.cache_prefixes:
            return self._forward_full(batch)
        uniq, rows = torch.unique(batch.doc_group, return_inverse=True)
        with torch.no_grad():
            cache = self._prefix_cache(batch.prefix_ids[uniq], batch.prefix_mask[uniq])
        return self._forward_suffix(batch, cache, rows, batch.prefix_mask[uniq])

    __call__ = forward

    # ------------------------------------------------------------------------------------------------------
    # Inference

    def plan(self, queries: Sequence[str], docs: Sequence["Document"]) -> list[ScoreGroup]:
        """Deterministic work plan for scoring ``queries[i]`` with ``docs[i]`` (see :meth:`_plan`)."""
        return self._plan(queries, docs)[0]

    def _plan(self, queries: Sequence[str], docs: Sequence["Document"]) -> tuple[list[ScoreGroup], list, list[int]]:
        """Deterministic work plan for scoring ``queries[i]`` with ``docs[i]``.

        Pairs are grouped by document over the whole input; documents are sorted by prefix length (longest
        first) and cut into groups of ``prefix_batch_size``; a group's pairs are sorted by query length and cut
        into suffix batches of ``batch_size``. The plan depends only on the input, never on what was done.
        """
        if len(queries) != len(docs):
            raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
        doc_index: dict[tuple[str, str, str], int] = {}
        uniq_docs: list = []
        pairs_of: list[list[int]] = []
        for i, doc in enumerate(docs):
            key = (doc.docid, doc.title or "", doc.text or "")
            j = doc_index.get(key)
            if j is None:
                j = doc_index[key] = len(uniq_docs)
                uniq_docs.append(doc)
                pairs_of.append([])
            pairs_of[j].append(i)
        qlen = [len(self.query_tokens(q)) for q in queries]
        dlen = [len(self.doc_tokens(d).prefix) for d in uniq_docs]
        order = sorted(range(len(uniq_docs)), key=lambda j: (-dlen[j], j))
        groups = []
        step = self.config.prefix_batch_size
        for g, start in enumerate(range(0, len(order), step)):
            members = order[start:start + step]
            pairs = sorted((i for j in members for i in pairs_of[j]), key=lambda i: (-qlen[i], i))
            bs = self.config.batch_size
            batches = tuple(tuple(pairs[k:k + bs]) for k in range(0, len(pairs), bs))
            groups.append(ScoreGroup(index=g, docs=tuple(members), pairs=tuple(pairs), batches=batches))
        doc_of = [0] * len(docs)
        for j, ps in enumerate(pairs_of):
            for i in ps:
                doc_of[i] = j
        return groups, uniq_docs, doc_of

    def score_groups(self, queries: Sequence[str], docs: Sequence["Document"],
                     skip: Callable[[ScoreGroup], bool] | None = None,
                     progress: bool = False) -> Iterator[tuple[ScoreGroup, list[float]]]:
        """Score group by group (see :meth:`plan`); yields each group with its pairs' scores in ``group.pairs``
        order. Groups for which ``skip(group)`` is true are not computed (resume)."""
        import torch
        from tqdm.auto import tqdm

        groups, uniq_docs, doc_of = self._plan(queries, docs)
        todo = [g for g in groups if not (skip and skip(g))]
        hm = self.hint_module
        was_training = bool(getattr(hm, "training", False))
        if hm is not None and hasattr(hm, "eval"):
            hm.eval()
        bar = tqdm(total=sum(len(g.pairs) for g in todo), unit="pair", disable=not progress, desc="scoring",
                   dynamic_ncols=True)
        try:
            with torch.inference_mode():
                for group in todo:
                    scores: dict[int, float] = {}
                    local = {j: k for k, j in enumerate(group.docs)}
                    dtok = [self.doc_tokens(uniq_docs[j]) for j in group.docs]
                    pre = self._batch([t.prefix for t in dtok], [t.passage for t in dtok],
                                      [(self.pad_id,)] * len(dtok), range(len(dtok)))
                    cache = None
                    if self.config.cache_prefixes:
                        cache = self._prefix_cache(pre.prefix_ids, pre.prefix_mask)
                    for chunk in group.batches:
                        slots = [local[doc_of[i]] for i in chunk]
                        first: dict[int, int] = {}
                        batch = self._batch([dtok[s].prefix for s in slots], [dtok[s].passage for s in slots],
                                            [self.query_tokens(queries[i]) for i in chunk],
                                            [first.setdefault(s, k) for k, s in enumerate(slots)])
                        if cache is not None:
                            rows = torch.tensor(slots, dtype=torch.long, device=batch.query_ids.device)
                            out = self._forward_suffix(batch, cache, rows, pre.prefix_mask)
                        else:
                            out = self._forward_full(batch)
                        for i, s in zip(chunk, out.tolist()):
                            scores[i] = float(s)
                        bar.update(len(chunk))
                    yield group, [scores[i] for i in group.pairs]
        finally:
            bar.close()
            if hm is not None and hasattr(hm, "train"):
                hm.train(was_training)

    def score(self, queries: Sequence[str], docs: Sequence["Document"], progress: bool = False) -> list[float]:
        """Mean query log-likelihood of each pair (``queries[i]``, ``docs[i]``); deterministic for a given input."""
        out = [0.0] * len(queries)
        for group, scores in self.score_groups(queries, docs, progress=progress):
            for i, s in zip(group.pairs, scores):
                out[i] = s
        return out

