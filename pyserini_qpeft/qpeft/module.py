"""Q-PEFT: a small query-dependent module that writes "hints" for a frozen query-likelihood LM.

The LM stays frozen. :class:`QPeftModule` reads the query tokens and the passage tokens and produces ``N``
embedding vectors that the scorer splices into the prompt just before ``Question:`` (as ``hints: <N vectors>\\n``);
the score stays the query log-likelihood, as in UPR. Three variants share one class, chosen by an explicit
``variant`` field (saved in checkpoints, never guessed from a path):

- ``retr`` (Q-PEFT-R): cosine similarity between query-token and passage-token input embeddings; each passage
  token is scored by its best match over the query tokens; the top-k *distinct* token ids are kept (a hard,
  non-differentiable choice), embedded and passed through the hint MLP. ``N = top_k``.
- ``attn`` (Q-PEFT-A): multi-head attention with the query-token embeddings as queries and all passage-token
  embeddings as keys/values (padding masked), then the hint MLP. One hint per query token, ``N = Q``.
- ``prompt``: the query-*independent* ablation. ``num_virtual_tokens`` learned vectors (peft's
  :class:`~peft.tuners.prompt_tuning.PromptEmbedding`, initialised from sampled vocabulary embeddings or from the
  embeddings of a text) go through the same hint MLP and into the same slot, trained with the same loss. We do
  not use peft's ``PromptTuning`` *model wrapper*: it prepends virtual tokens at position 0, which (a) puts them
  in a different place than the Q-PEFT hints, so the ablation would differ in more than query dependence, and
  (b) changes the passage prefix, which would stop the scorer from caching the query-independent
  ``instruction + passage`` prefix across queries.
- ``prompt_tokens`` (retr/attn, beyond the papers): the prompt variant's learned vectors placed ahead of the
  query-dependent hints, through the same MLP (``N = prompt_tokens + top_k`` or ``+ Q``).

Design choices (documented departures from the reference code):

- The frozen LM input-embedding matrix is *referenced*, never copied: it is not a parameter of this module,
  gets no gradient and is not saved in checkpoints (the reference code trained a vocabulary copy, ~21 % of a
  135M model). Trainable weights: the MLP (``2 H h``), the attention (``4 H^2``, attn only), the prompt vectors
  (``N H``, prompt only): about 1.5 % of SmolLM2-135M for ``attn``, 0.5 % for ``retr``.
- The hint MLP is residual, ``hint = x + MLP(x)``, with the last layer scaled by ``init_scale`` at init, so an
  untrained module emits sensible embeddings (the selected tokens themselves for ``retr``; an attention-weighted
  mix of passage tokens for ``attn``) rather than random vectors, while gradients reach every weight at once.
- The attention starts as an identity map (``W_q = c I``, ``W_k = W_v = W_o = I``) with ``c`` chosen so that a
  passage token equal to the query token gets a logit of about ``attn_init_sharpness``: at step 0 Q-PEFT-A is a
  (nearly hard) version of Q-PEFT-R's token matching. Measured on 40 SciFact train (query, positive) pairs with
  SmolLM2: query NLL 3.36 without hints (UPR), 3.98 with untrained attn hints at sharpness 16 (blurred averages
  of passage embeddings confuse the LM), 3.01 at sharpness 64 (the default). ``attn_init="xavier"`` gives
  PyTorch's default init instead.

Module computations run in fp32 (the parameters are fp32 for AdamW); hints are returned in the LM's dtype.
This module imports torch at import time: the CLI imports it inside command bodies only.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..errors import ModelError
from .config import ATTN_INITS, MLPS, PROMPT_INITS, TOKEN_FILTERS, VARIANTS, QPeftConfig  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from ..lm.backbone import FrozenLM

logger = logging.getLogger(__name__)

SIM_DECIMALS = 5
"""Q-PEFT-R ranks candidate hint tokens by cosine similarity rounded to this many decimals, so that float noise
(about 1e-7) decides a tie only for values at a rounding boundary; tied tokens come in passage order."""

class HintMLP(nn.Module):
    """``[..., H] -> [..., H]``: residual ``x + W2 relu(W1 x)`` (``W2`` starts scaled by ``init_scale``) or, with
    ``residual=False``, the paper's plain ``W2 relu(W1 x)`` with xavier-uniform weights and zero biases."""

    def __init__(self, hidden_size: int, mlp_hidden: int, dropout: float, init_scale: float, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            if residual:
                self.fc2.weight.mul_(init_scale)
                self.fc2.bias.zero_()
            else:
                for layer in (self.fc1, self.fc2):
                    nn.init.xavier_uniform_(layer.weight)
                    layer.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        out = self.fc2(self.dropout(torch.relu(self.fc1(x))))
        return x + out if self.residual else out


class QPeftModule(nn.Module):
    """The hint module (implements the scorer's ``HintModule`` protocol).

    Args:
        config: the hyperparameters.
        embedding: the frozen LM's input embedding (``nn.Embedding`` ``[V, H]``); referenced, not copied,
            never trained or saved.
        hidden_size: ``H``, the LM hidden size.
        init_token_ids: prompt variant: token ids whose embeddings initialise the prompt vectors
            (``None`` = sampled vocabulary ids, seeded by ``config.seed``).
        exclude_token_ids: retr: token ids never chosen as hints (the tokenizer's special tokens).
    """

    def __init__(self, config: QPeftConfig, embedding: nn.Module, hidden_size: int,
                 init_token_ids: list[int] | None = None, exclude_token_ids: list[int] | None = None):
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size
        # A plain list hides the LM's embedding from parameters(), state_dict() and .to().
        self._frozen = [embedding]
        generator = torch.Generator().manual_seed(config.seed)
        fork = torch.random.fork_rng(devices=[])
        with fork:
            torch.manual_seed(config.seed)
            self.mlp = HintMLP(hidden_size, config.mlp_hidden or hidden_size, config.dropout, config.init_scale,
                               residual=config.mlp == "residual")
            if config.query_proj:
                self.query_proj = nn.Linear(hidden_size, hidden_size, bias=False)
                with torch.no_grad():
                    self.query_proj.weight.copy_(torch.eye(hidden_size))
            if config.variant == "attn":
                if hidden_size % config.num_heads:
                    raise ValueError(f"num_heads={config.num_heads} does not divide hidden size {hidden_size}")
                self.attention = nn.MultiheadAttention(hidden_size, config.num_heads, dropout=config.dropout,
                                                       batch_first=True)
                if config.attn_init == "identity":
                    self._identity_init()
            elif config.variant == "prompt":
                self.prompt = self._make_prompt(init_token_ids, generator, config.num_virtual_tokens)
            if config.prompt_tokens:  # retr/attn (the config refuses it for prompt); made last: inits above unchanged
                self.prompt = self._make_prompt(init_token_ids, generator, config.prompt_tokens)
        excluded = torch.tensor(sorted(set(exclude_token_ids or [])), dtype=torch.long)
        self.register_buffer("exclude_token_ids", excluded, persistent=False)
        device = embedding.weight.device
        self.to(device)

    # ---- construction helpers -------------------------------------------------------------------------
    @property
    def embedding(self) -> nn.Module:
        return self._frozen[0]

    @property
    def lm_dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    def _identity_init(self) -> None:
        hidden, heads = self.hidden_size, self.config.num_heads
        weight = self.embedding.weight.detach().float()
        sample = weight[torch.randperm(weight.shape[0])[:4096]]
        mean_sq_norm = float(sample.pow(2).sum(-1).mean())
        head_dim = hidden // heads
        # logit = (c x)_h . x_h / sqrt(head_dim) ~ c |x|^2 / heads / sqrt(head_dim) for an exact match
        c = self.config.attn_init_sharpness * math.sqrt(head_dim) * heads / max(mean_sq_norm, 1e-6)
        eye = torch.eye(hidden)
        with torch.no_grad():
            self.attention.in_proj_weight.copy_(torch.cat([c * eye, eye, eye], dim=0))
            self.attention.in_proj_bias.zero_()
            self.attention.out_proj.weight.copy_(eye)
            self.attention.out_proj.bias.zero_()

    def _make_prompt(self, init_token_ids: list[int] | None, generator: torch.Generator, n: int) -> nn.Module:
        """``n`` learned vectors (peft's ``PromptEmbedding``) initialised from token embeddings."""
        from peft import PromptTuningConfig, PromptTuningInit
        from peft.tuners.prompt_tuning import PromptEmbedding

        peft_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, token_dim=self.hidden_size,
                                         num_transformer_submodules=1,
                                         prompt_tuning_init=PromptTuningInit.RANDOM)
        prompt = PromptEmbedding(peft_config, self.embedding)
        vocab = self.embedding.weight.shape[0]
        if init_token_ids:
            ids = (list(init_token_ids) * math.ceil(n / len(init_token_ids)))[:n]
            ids_t = torch.tensor(ids, dtype=torch.long)
        else:
            ids_t = torch.randint(0, vocab, (n,), generator=generator)
        with torch.no_grad():
            init = self.embedding(ids_t.to(self.embedding.weight.device)).detach().float().cpu()
            prompt.embedding.weight.copy_(init)
        return prompt

    # ---- forward --------------------------------------------------------------------------------------
    def _embed(self, ids: Tensor) -> Tensor:
        """Frozen LM embeddings in fp32: ``[B, T]`` -> ``[B, T, H]`` (no gradient to the LM)."""
        with torch.no_grad():
            return self.embedding(ids).float()

    def forward(self, query_ids: Tensor, query_mask: Tensor, passage_ids: Tensor,
                passage_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Hints for each (query, passage) pair.

        Args:
            query_ids, query_mask: ``[B, Q]`` right padded (mask 1 = real token).
            passage_ids, passage_mask: ``[B, D]`` right padded.

        Returns:
            ``(hints [B, N, H]`` in the LM dtype, ``hint_mask [B, N]`` long, 1 = real hint).
            ``N`` = ``top_k`` (retr), ``Q`` (attn), ``num_virtual_tokens`` (prompt); plus ``prompt_tokens``
            (retr/attn), whose vectors come first.
        """
        variant = self.config.variant
        if variant == "retr":
            x, mask = self.select_tokens(query_ids, query_mask, passage_ids, passage_mask)[:2]
        elif variant == "attn":
            x = self.attend(query_ids, query_mask, passage_ids, passage_mask, need_weights=False)[0]
            mask = query_mask.long()
        else:
            x, mask = self._prompt_vectors(query_ids.shape[0], query_ids.device)
        if self.config.prompt_tokens:
            shared, shared_mask = self._prompt_vectors(query_ids.shape[0], query_ids.device)
            x, mask = torch.cat([shared, x], dim=1), torch.cat([shared_mask, mask], dim=1)
        hints = self.mlp(x) * mask.unsqueeze(-1).to(x.dtype)
        return hints.to(self.lm_dtype), mask

    def max_hints(self, max_query_tokens: int) -> int:
        """The most hint vectors :meth:`forward` gives one row (``N``) for queries of at most ``max_query_tokens``."""
        variant = self.config.variant
        shared = self.prompt.embedding.weight.shape[0] if (variant == "prompt" or self.config.prompt_tokens) else 0
        return shared + {"retr": self.config.top_k, "attn": max_query_tokens}.get(variant, 0)

    def _prompt_vectors(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """The learned query-independent vectors for every row: ``([B, P, H]`` fp32, mask ``[B, P]`` of ones)."""
        n = self.prompt.embedding.weight.shape[0]
        x = self.prompt(torch.arange(n, device=self.prompt.embedding.weight.device))
        return x.unsqueeze(0).expand(batch, -1, -1), torch.ones(batch, n, dtype=torch.long, device=device)

    def token_scores(self, query_ids: Tensor, query_mask: Tensor, passage_ids: Tensor,
                     passage_mask: Tensor) -> Tensor:
        """retr: each passage token's best cosine similarity to a query token, ``[B, D]`` (-inf at padding).

        Row by row over each row's own tokens (no padding in the products; the masks are right padded), so that a
        pair's similarities, and the hints chosen from them, do not depend on the batch it is scored in: a padded
        batched product differs in the last bits, which reordered the exact-match ties (cosine 1). The lengths are
        read once per batch (no device sync per row).
        """
        p = torch.nn.functional.normalize(self._embed(passage_ids), dim=-1)
        queries = self._embed(query_ids)  # a lookup: each row's vectors are the same in any batch
        width = passage_ids.shape[1]
        rows = []
        for b, (nq, np_) in enumerate(zip(query_mask.sum(1).tolist(), passage_mask.sum(1).tolist())):
            nq, np_ = int(nq), int(np_)
            row = torch.full((width,), float("-inf"), dtype=p.dtype, device=p.device)
            if nq and np_:
                q = queries[b, :nq]
                if self.config.query_proj:
                    q = self.query_proj(q)
                q = torch.nn.functional.normalize(q, dim=-1)
                row = torch.cat([(p[b, :np_] @ q.T).max(dim=-1).values, row[np_:]])
            rows.append(row)
        best = torch.stack(rows)
        invalid = ~passage_mask.bool()
        if self.exclude_token_ids.numel():
            invalid = invalid | torch.isin(passage_ids, self.exclude_token_ids.to(passage_ids.device))
        return best.masked_fill(invalid, float("-inf"))

    @property
    def selection_rule(self) -> str | None:
        """How retr chooses its hint tokens, named in rerank state fingerprints (scores under another rule are
        another job's); None for the other variants."""
        if self.config.variant != "retr":
            return None
        return f"row-wise cosine rounded to {SIM_DECIMALS} decimals, ties in passage order"

    def select_tokens(self, query_ids: Tensor, query_mask: Tensor, passage_ids: Tensor,
                passage_mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """retr: top-k distinct passage tokens -> (embeddings ``[B, k, H]``, mask ``[B, k]``, ids, sims).

        Ranked by similarity rounded to :data:`SIM_DECIMALS` decimals, ties (e.g. the passage tokens that also
        occur in the query, all at cosine 1) in order of first occurrence in the passage.
        """
        k = self.config.top_k
        scores = self.token_scores(query_ids, query_mask, passage_ids, passage_mask)
        batch = passage_ids.shape[0]
        ids = torch.zeros(batch, k, dtype=torch.long, device=passage_ids.device)
        sims = torch.zeros(batch, k, device=passage_ids.device)
        mask = torch.zeros(batch, k, dtype=torch.long, device=passage_ids.device)
        positions = torch.arange(passage_ids.shape[1], device=passage_ids.device)
        for b in range(batch):
            valid = torch.isfinite(scores[b])
            if not bool(valid.any()):
                continue
            uniq, inverse = torch.unique(passage_ids[b][valid], return_inverse=True)
            best = torch.full((uniq.numel(),), float("-inf"), device=scores.device)
            best = best.scatter_reduce(0, inverse, scores[b][valid], reduce="amax")
            first = torch.full((uniq.numel(),), passage_ids.shape[1], device=scores.device)
            first = first.scatter_reduce(0, inverse, positions[valid], reduce="amin")
            order = torch.sort(first, stable=True).indices  # reading order, then by rounded similarity (stable)
            rounded = torch.round(best.detach() * 10 ** SIM_DECIMALS)
            order = order[torch.sort(-rounded[order], stable=True).indices][:k]
            n = order.numel()
            ids[b, :n] = uniq[order]
            sims[b, :n] = best[order]
            mask[b, :n] = 1
        x = self._embed(ids) * mask.unsqueeze(-1)
        if self.config.query_proj:
            # value 1, gradient d(sim)/sim: the selection's similarity trains the query-side map
            safe = torch.where(mask.bool(), sims, torch.ones_like(sims))
            x = x * (safe / safe.detach()).unsqueeze(-1)
        return x, mask, ids, sims

    def attend(self, query_ids: Tensor, query_mask: Tensor, passage_ids: Tensor, passage_mask: Tensor,
                need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """attn: ``[B, Q, H]`` attention output (and ``[B, heads, Q, D]`` weights when asked)."""
        q = self._embed(query_ids)
        p = self._embed(passage_ids)
        pad = ~passage_mask.bool()
        # An all-padding passage would give NaN weights: let it attend to its first position instead.
        empty = pad.all(dim=1)
        if bool(empty.any()):
            pad = pad.clone()
            pad[empty, 0] = False
        out, weights = self.attention(q, p, p, key_padding_mask=pad, need_weights=need_weights,
                                      average_attn_weights=False)
        return out, weights


def build_module(lm: "FrozenLM", config: QPeftConfig):
    """A :class:`QPeftModule` for ``lm`` (on its device), using its tokenizer for text init and special tokens."""
    tokenizer = lm.tokenizer
    init_ids = None
    if (config.variant == "prompt" or config.prompt_tokens) and config.prompt_init == "text":
        init_ids = tokenizer(config.prompt_init_text, add_special_tokens=False)["input_ids"]
        if not init_ids:
            raise ValueError(f"prompt_init_text {config.prompt_init_text!r} has no tokens")
    from .tokens import excluded_token_ids

    return QPeftModule(config, lm.model.get_input_embeddings(), lm.hidden_size, init_token_ids=init_ids,
                      exclude_token_ids=excluded_token_ids(tokenizer, config.token_filter))


def trainable_parameters(module) -> int:
    """Number of trainable parameters of ``module`` (the frozen LM embedding is not among them)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_report(module, lm: "FrozenLM") -> dict[str, float]:
    """``{"trainable": n, "lm": N, "percent_of_lm": 100 n / N}``."""
    n, total = trainable_parameters(module), lm.num_parameters()
    return {"trainable": n, "lm": total, "percent_of_lm": 100.0 * n / total}


def check_variant(requested: str, saved: str, where: str) -> None:
    """Raise ModelError when a checkpoint of variant ``saved`` is used as ``requested``."""
    if requested != saved:
        raise ModelError(f"{where} holds a Q-PEFT {saved!r} module, not {requested!r}")
