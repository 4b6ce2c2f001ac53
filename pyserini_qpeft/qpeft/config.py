"""The Q-PEFT module's hyperparameters (torch-free, so the CLI can read choices and defaults without torch)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

VARIANTS = ("retr", "attn", "prompt")
# each variant's reranker name (`rerank --reranker`), and back
RERANKER_NAMES = {"retr": "qpeft-retr", "attn": "qpeft-attn", "prompt": "prompt-tuning"}
NAME_TO_VARIANT = {name: variant for variant, name in RERANKER_NAMES.items()}
PROMPT_INITS = ("vocab", "text")
ATTN_INITS = ("identity", "xavier")
MLPS = ("residual", "plain")
TOKEN_FILTERS = ("special", "content")
DEFAULT_PROMPT_TEXT = ("Key terms of the passage that the question asks about, used to write a relevant question:")


@dataclass(frozen=True)
class QPeftConfig:
    """Hyperparameters of a :class:`QPeftModule`.

    Args:
        variant: ``retr`` (Q-PEFT-R), ``attn`` (Q-PEFT-A) or ``prompt`` (query-independent soft prompt).
        top_k: retr: number of distinct passage tokens kept as hints.
        num_heads: attn: attention heads (must divide the LM hidden size).
        num_virtual_tokens: prompt: number of learned vectors.
        mlp_hidden: hidden width of the hint MLP; ``None`` = the LM hidden size.
        dropout: dropout on the MLP hidden layer and the attention weights (training only).
        init_scale: the MLP's last layer is scaled by this at init (small = hints start near ``x``).
        attn_init: ``identity`` (soft token matching at step 0) or ``xavier`` (PyTorch default).
        attn_init_sharpness: identity init: attention logit of an exact token match at step 0.
        prompt_init: prompt: ``vocab`` (embeddings of random vocabulary tokens, seeded) or ``text``.
        prompt_init_text: prompt: the text whose token embeddings initialise the vectors (repeated/truncated).
        seed: seeds the module's initialisation.
        mlp: ``residual`` (``x + MLP(x)``, last layer scaled by ``init_scale``: hints start as ``x``) or
            ``plain`` (the paper's ``Linear -> ReLU -> Linear``, xavier-initialised).
        token_filter: retr: tokens never chosen as hints: ``special`` (the tokenizer's special tokens) or
            ``content`` (also punctuation, digits and other non-alphabetic tokens, single letters and English
            stop-words, so the top-k slots go to content words).
        query_proj: retr: a trainable ``[H, H]`` map (identity at init) on the query side of the similarity, the
            lean version of the paper's learnable embedding copy; hints are scaled by ``sim / sim.detach()``
            (1 in value) so that gradients reach it and the selection itself can learn.
        prompt_tokens: retr/attn: also this many query-*independent* learned vectors (made and initialised as the
            prompt variant's, ``prompt_init``) ahead of the query-dependent hints, through the same MLP; 0 = none
            (the paper's module). A lean stand-in for what the reference code's trained vocabulary copy adds
            without reading the query.
    """

    variant: str = "attn"
    top_k: int = 16
    num_heads: int = 2
    num_virtual_tokens: int = 16
    mlp_hidden: int | None = None
    dropout: float = 0.0
    init_scale: float = 0.1
    attn_init: str = "identity"
    attn_init_sharpness: float = 64.0
    prompt_init: str = "vocab"
    prompt_init_text: str = DEFAULT_PROMPT_TEXT
    seed: int = 0
    mlp: str = "residual"
    token_filter: str = "special"
    query_proj: bool = False
    prompt_tokens: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name in ("top_k", "num_heads", "num_virtual_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.mlp_hidden is not None and (not isinstance(self.mlp_hidden, int) or self.mlp_hidden < 1):
            raise ValueError(f"mlp_hidden must be a positive integer or None, got {self.mlp_hidden!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.init_scale > 0.0:
            raise ValueError(f"init_scale must be > 0, got {self.init_scale!r}")
        if self.attn_init not in ATTN_INITS:
            raise ValueError(f"attn_init must be one of {ATTN_INITS}, got {self.attn_init!r}")
        if not self.attn_init_sharpness > 0.0:
            raise ValueError(f"attn_init_sharpness must be > 0, got {self.attn_init_sharpness!r}")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {PROMPT_INITS}, got {self.prompt_init!r}")
        if self.mlp not in MLPS:
            raise ValueError(f"mlp must be one of {MLPS}, got {self.mlp!r}")
        if self.token_filter not in TOKEN_FILTERS:
            raise ValueError(f"token_filter must be one of {TOKEN_FILTERS}, got {self.token_filter!r}")
        if not isinstance(self.prompt_tokens, int) or self.prompt_tokens < 0:
            raise ValueError(f"prompt_tokens must be a non-negative integer, got {self.prompt_tokens!r}")
        if self.prompt_tokens and self.variant == "prompt":
            raise ValueError("prompt_tokens adds prompt vectors to retr/attn; the prompt variant has "
                             "num_virtual_tokens")
        if self.query_proj and self.variant != "retr":
            raise ValueError(f"query_proj applies to the retr variant only, not {self.variant!r}")
        if self.prompt_init == "text" and not self.prompt_init_text.strip():
            raise ValueError("prompt_init='text' needs a non-empty prompt_init_text")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QPeftConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown QPeftConfig fields: {unknown}")
        return cls(**data)
