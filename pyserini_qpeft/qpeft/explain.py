"""What a Q-PEFT module picks or attends to for one (query, document) pair (``pyserini-qpeft explain``)."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..lm.backbone import FrozenLM


def _decode(tokenizer, token_id: int) -> str:
    return tokenizer.decode([int(token_id)])


def explain(lm: "FrozenLM", module, scorer, query: str, doc, top: int = 10) -> dict[str, Any]:
    """What the module picks or attends to for one (query, document) pair.

    Args:
        lm: the frozen LM (its tokenizer decodes tokens).
        module: a :class:`QPeftModule`.
        scorer: a ``QueryLikelihoodScorer`` built with ``hint_module=module`` (its ``encode`` gives the exact
            query/passage tokens the module sees when scoring).
        query: the query text.
        doc: a ``Document``.
        top: retr: at most this many tokens (all ``top_k`` are the hints); attn: top passage tokens per head.

    Returns:
        ``{"variant", "score", "score_without_hints", "tokens": [...]}`` for retr, with each selected token's
        decoded text and cosine similarity; for attn ``"heads": [[{"position", "token", "weight"}, ...], ...]``
        with attention averaged over the query tokens; for prompt the nearest vocabulary token of each hint.
        retr and attn also give ``passage_tokens`` (how many the module read) and ``lm_passage_tokens`` (how many
        the LM's prompt holds; fewer with ``ScorerConfig.hint_passage_tokens`` above the LM's budget).
    """
    from ..lm.scoring import QueryLikelihoodScorer

    batch = scorer.encode([query], [doc])
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            score = float(scorer.forward(batch)[0])
            baseline = QueryLikelihoodScorer(lm, dataclasses.replace(scorer.config, hint_passage_tokens=None))
            score0 = float(baseline.forward(baseline.encode([query], [doc]))[0])
            out: dict[str, Any] = {"variant": module.config.variant, "query": query, "docid": doc.docid,
                                   "score": score, "score_without_hints": score0}
            qi, qm, pi, pm = batch.query_ids, batch.query_mask, batch.passage_ids, batch.passage_mask
            if module.config.variant != "prompt":  # how much of the passage the module and the LM read
                out["passage_tokens"] = int(pm[0].sum())
                out["lm_passage_tokens"] = len(baseline.doc_tokens(doc).passage)
            tok = lm.tokenizer
            if module.config.variant == "retr":
                _, mask, ids, sims = module.select_tokens(qi, qm, pi, pm)
                out["tokens"] = [{"token": _decode(tok, i), "token_id": int(i), "similarity": float(s)}
                                 for i, s, m in zip(ids[0].tolist(), sims[0].tolist(), mask[0].tolist()) if m][:top]
            elif module.config.variant == "attn":
                _, weights = module.attend(qi, qm, pi, pm, need_weights=True)  # [1, heads, Q, D]
                qmask = qm[0].float()
                mean = (weights[0] * qmask[None, :, None]).sum(1) / qmask.sum().clamp(min=1)  # [heads, D]
                heads = []
                for h in range(mean.shape[0]):
                    vals, pos = mean[h].topk(min(top, int(pm[0].sum())))
                    heads.append([{"position": int(p), "token": _decode(tok, pi[0, p]), "weight": float(v)}
                                  for v, p in zip(vals.tolist(), pos.tolist())])
                out["heads"] = heads
            else:
                hints, _ = module(qi, qm, pi, pm)
                emb = torch.nn.functional.normalize(module.embedding.weight.float(), dim=-1)
                near = (torch.nn.functional.normalize(hints[0].float(), dim=-1) @ emb.T).max(dim=-1)
                out["tokens"] = [{"token": _decode(tok, i), "token_id": int(i), "similarity": float(s)}
                                 for i, s in zip(near.indices.tolist(), near.values.tolist())][:top]
            return out
    finally:
        module.train(was_training)


