"""The forward pass of query-likelihood scoring: prefix KV cache, hint vectors, logits only at query positions.

Shapes: B pairs per batch, U distinct prefixes in a batch or group, P prefix width, S suffix width, Q query width,
D passage width, N hints, H hidden size, V vocabulary.

* **Prefix KV caching.** A document's prefix ``[U, P]`` is run once; its key/value cache is reused (rows selected
  per layer) for every pair that uses the document.
* **No full-vocabulary logits for passage positions.** The LM body runs without its head; only the hidden states
  that predict query tokens go through the LM head (the head is 49k x 576 for SmolLM2: full logits for a
  32 x 160 batch would be 1 GB of floats).
* **Padding never changes a score.** The prefix is left padded, the suffix right padded, attention masks cover
  both and position ids are ``cumsum(mask) - 1`` over the whole sequence, so every real token sees the same
  positions as in an unpadded run; a masked hint is skipped by both attention and positions.
"""
from __future__ import annotations

import functools
import inspect

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .backbone import FrozenLM
    from .prompts import SuffixPieces
    from .scoring import HintModule


@dataclass
class PairBatch:
    """Tensors for B (query, document) pairs, built by :meth:`QueryLikelihoodScorer.encode` or :func:`collate`.

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


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple["Tensor", "Tensor"]:
    """Ragged rows -> ids and mask ``[len(rows), max(1, longest)]`` (long), padded on the left or right."""
    import torch

    width = max(1, max((len(r) for r in rows), default=0))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            sl = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, sl] = torch.tensor(row, dtype=torch.long)
            mask[i, sl] = 1
    return ids, mask


def collate(prefixes: Sequence[Sequence[int]], passages: Sequence[Sequence[int]], queries: Sequence[Sequence[int]],
            doc_group: Sequence[int], pad_id: int, device: "str | torch.device") -> PairBatch:
    """B rows of token ids -> a :class:`PairBatch` on ``device`` (prefix left padded, the rest right padded)."""
    import torch

    prefix_ids, prefix_mask = pad_rows(prefixes, pad_id, left=True)
    passage_ids, passage_mask = pad_rows(passages, pad_id, left=False)
    query_ids, query_mask = pad_rows(queries, pad_id, left=False)
    return PairBatch(prefix_ids, prefix_mask, passage_ids, passage_mask, query_ids, query_mask,
                     torch.tensor(list(doc_group), dtype=torch.long)).to(device)


def positions(mask: "Tensor") -> "Tensor":
    """Position ids ``[B, T]`` of a (left and/or right padded) attention mask ``[B, T]``: ``cumsum - 1``."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class QueryLikelihoodForward:
    """The model side of the scorer: frozen LM body and head, optional hint module, fixed suffix tokens.

    Args:
        lm: the frozen LM (any Hugging Face causal LM with ``get_decoder()`` and ``get_output_embeddings()``).
        suffix: the fixed suffix token ids (``Question:``, hint markers) from the prompt builder.
        hint_module: optional trainable module ``(query_ids [B, Q], query_mask [B, Q], passage_ids [B, D],
            passage_mask [B, D]) -> (hints [B, N, H], hint_mask [B, N])``.
    """

    def __init__(self, lm: "FrozenLM", suffix: "SuffixPieces", hint_module: "HintModule | None" = None):
        if hint_module is not None and getattr(lm.text_config, "hidden_size_per_layer_input", None):
            from ..errors import ModelError

            raise ModelError(
                f"{lm.model_id}: {type(lm.model).__name__} feeds every layer a second embedding looked up by token id "
                f"(per-layer inputs, as Gemma 3n and the small Gemma 4 do), and hint vectors have no token id: Q-PEFT "
                f"and prompt tuning cannot run on it (zero-shot UPR and LMORT can)")
        self.lm = lm
        self.pieces = suffix
        self.hint_module = hint_module
        self.body = lm.body
        self.head = lm.logit_head

    def suffix(self, batch: PairBatch) -> tuple["Tensor", "Tensor", int]:
        """Suffix embeddings ``[B, S, H]``, mask ``[B, S]`` and the suffix index predicting the first query token.

        Layout per row: ``[hints: (N hints) \\n] Question: q_1 .. q_{Q-1}`` (query right padded; the last query
        column is dropped since it predicts nothing scored)."""
        import torch

        lm, b, pieces = self.lm, len(batch), self.pieces
        device = batch.query_ids.device

        def fixed(ids: Sequence[int]) -> tuple["Tensor", "Tensor"]:
            t = torch.tensor(list(ids), dtype=torch.long, device=device).unsqueeze(0).expand(b, -1)
            return lm.embed(t), torch.ones_like(t)

        parts, masks = [], []
        n_hints = None
        if self.hint_module is not None:
            hints, hint_mask = self.hint_module(batch.query_ids, batch.query_mask, batch.passage_ids,
                                                batch.passage_mask)
            if hints.dim() != 3 or hints.shape[0] != b or hints.shape[2] != lm.hidden_size:
                raise ValueError(f"hint module returned hints of shape {tuple(hints.shape)}, "
                                 f"expected [{b}, N, {lm.hidden_size}]")
            if tuple(hint_mask.shape) != tuple(hints.shape[:2]):
                raise ValueError(f"hint_mask shape {tuple(hint_mask.shape)} does not match hints "
                                 f"{tuple(hints.shape[:2])}")
            n_hints = int(hints.shape[1])
            if pieces.hint_open:
                e, m = fixed(pieces.hint_open)
                parts.append(e)
                masks.append(m)
            parts.append(hints.to(lm.dtype))
            masks.append(hint_mask.to(device=device, dtype=torch.long))
            if pieces.hint_close:
                e, m = fixed(pieces.hint_close)
                parts.append(e)
                masks.append(m)
        e, m = fixed(pieces.question)
        parts.append(e)
        masks.append(m)
        # The last query token predicts nothing that is scored: it is not run (its column is never needed).
        parts.append(lm.embed(batch.query_ids[:, :-1]))
        masks.append(batch.query_mask[:, :-1].long())
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1), pieces.query_start(n_hints)

    def query_logprobs(self, hidden: "Tensor", batch: PairBatch, start: int) -> "Tensor":
        """Mean log P(query token) per row from suffix hidden states ``[B, S, H]`` -> ``[B]`` float32."""
        import torch

        q = batch.query_ids.shape[1]
        states = hidden[:, start:start + q]  # position start + j predicts query token j
        keep = batch.query_mask.bool()
        logits = self.head(states[keep])  # [n real query tokens, V] float32
        logp = torch.log_softmax(logits, dim=-1).gather(-1, batch.query_ids[keep].unsqueeze(-1)).squeeze(-1)
        total = torch.zeros(keep.shape, dtype=logp.dtype, device=logp.device)
        total[keep] = logp
        return total.sum(1) / keep.sum(1).clamp(min=1)

    def prefix_cache(self, prefix_ids: "Tensor", prefix_mask: "Tensor"):
        """Run the body over ``[U, P]`` left padded prefixes; returns their KV cache (a ``DynamicCache``).

        Every layer keeps all ``P`` positions, sliding-window layers included: a cache built from the model's
        config crops those to the window, and a suffix run on a cropped cache the scorer re-slices (``select_cache``)
        no longer sees the window the model's own forward sees (scores differed once prompts outgrew the window:
        Gemma 2/3, Mistral, Qwen2 with ``use_sliding_window``; ``tests/test_architectures.py``)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        out = self.body(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=positions(prefix_mask),
                        use_cache=True, **{self._cache_arg: cache})
        returned = getattr(out, "cache", None)
        return returned if returned is not None else out.past_key_values

    @functools.cached_property
    def _cache_arg(self) -> str:
        """The body's keyword for a KV cache: ``cache`` in current transformers (``past_key_values`` is deprecated
        there and warns on every call), ``past_key_values`` in older releases."""
        return "cache" if "cache" in inspect.signature(self.body.forward).parameters else "past_key_values"

    def select_cache(self, cache, rows: "Tensor"):
        """A new cache holding rows ``rows`` ``[B]`` of ``cache`` (per layer index_select on the batch dim)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        new = DynamicCache()
        for old in cache.layers:
            # Adopt the selected tensors as they are (DynamicCache(ddp_cache_data=...) would concatenate them onto
            # an empty tensor: one more copy of the whole cache per batch).
            keys, values = old.keys.index_select(0, rows), old.values.index_select(0, rows)
            layer = DynamicLayer()
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
            new.layers.append(layer)
        return new

    def forward_suffix(self, batch: PairBatch, cache, rows: "Tensor", prefix_mask: "Tensor") -> "Tensor":
        """Scores ``[B]`` of ``batch`` on top of a prefix cache of U rows; pair b uses cache row ``rows[b]``;
        ``prefix_mask`` ``[U, P]`` is the mask the cache was built with."""
        import torch

        embeds, mask, start = self.suffix(batch)
        full_mask = torch.cat([prefix_mask.index_select(0, rows), mask], dim=1)
        pos = positions(full_mask)[:, prefix_mask.shape[1]:]
        out = self.body(inputs_embeds=embeds, attention_mask=full_mask, position_ids=pos, use_cache=True,
                        **{self._cache_arg: self.select_cache(cache, rows)})
        return self.query_logprobs(out.last_hidden_state, batch, start)

    def forward_full(self, batch: PairBatch) -> "Tensor":
        """Scores ``[B]`` with prefix and suffix in one forward (no cache; the cross-check path)."""
        import torch

        embeds, mask, start = self.suffix(batch)
        p = batch.prefix_ids.shape[1]
        full = torch.cat([self.lm.embed(batch.prefix_ids), embeds], dim=1)
        full_mask = torch.cat([batch.prefix_mask.long(), mask], dim=1)
        out = self.body(inputs_embeds=full, attention_mask=full_mask, position_ids=positions(full_mask))
        return self.query_logprobs(out.last_hidden_state[:, p:], batch, start)
