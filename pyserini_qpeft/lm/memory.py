"""Scoring batch sizes for a GPU, from its memory instead of the CPU defaults (64 pairs / 32 documents).

On a CPU the defaults keep every core busy. On a GPU they leave it idle (the 29,966-pair SciFact UPR rerank ran
at ~650 pairs/s on an H100, under 1 % of its bf16 peak). :func:`gpu_batch_sizes` sizes both batches from an
estimate of the memory one pair and one document need and a share of the device's *total* memory (not its free
memory: the plan -- which pairs form a batch -- then depends only on the GPU model, so a resumed or sharded job on
the same kind of GPU computes the same batches).

Per pair in a suffix forward (the peak of :meth:`~pyserini_qpeft.lm.forward.QueryLikelihoodForward.forward_suffix`):

* the pair's copy of its document's KV cache plus the suffix appended to it:
  ``2 * layers * kv_heads * head_dim * (prompt + suffix tokens) * bytes``, twice (the copy and the grown cache);
* the LM head at the query positions in fp32 (logits, their float copy and the log-softmax):
  ``3 * query_tokens * vocab * 4``;
* activations of the suffix: ``suffix_tokens * (hidden + intermediate) * bytes * 4``.

Per document in a prefix forward: its KV cache (kept for the whole group) plus ``4`` activation copies of its
prompt tokens.

The batches' share: half the card less the model, or a quarter of what the model leaves if that is more (a model
larger than a third of the card -- an 8B model in bf16 on a 24 GiB card -- got batches of 1 from the first rule
alone; below a third, the first rule decides, so the default model's batches are as before). The estimate is deliberately generous; it has not yet been measured on a GPU (no accelerator
was lent when it was written), which is why the budget share is a parameter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection

if TYPE_CHECKING:
    from .backbone import FrozenLM
    from .scoring import ScorerConfig

BUDGET = 0.5          # share of the GPU's total memory the scoring batches may use (the model is subtracted first)
LEFT_SHARE = 0.25     # ... or at least this share of the memory the model leaves (large models)
MAX_PAIRS = 4096      # cap on pairs per suffix batch (beyond this, larger batches stop paying off)
MAX_DOCS = 1024       # cap on documents per prefix batch
SUFFIX_EXTRA = 16     # tokens of "hints:"/"Question:" around the query (hints add their own count)


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a causal LM's config."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    bytes_per_value: int
    model_bytes: int

    @classmethod
    def of(cls, lm: "FrozenLM") -> "ModelShape":
        cfg = lm.text_config
        heads = int(cfg.num_attention_heads)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        per_layer = getattr(cfg, "per_layer_config", None)
        if per_layer is not None:  # layers of different shapes (Gemma 4): the head size that gives their total KV
            values = sum(int(getattr(layer, "num_key_value_heads", None) or kv_heads)
                         * int(getattr(layer, "head_dim", None) or cfg.hidden_size // heads) for layer in per_layer)
            head_dim = -(-values // (int(cfg.num_hidden_layers) * kv_heads))
        else:
            head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        itemsize = next(lm.model.parameters()).element_size()
        intermediate = getattr(cfg, "intermediate_size", None) or 4 * cfg.hidden_size
        return cls(layers=int(cfg.num_hidden_layers), kv_heads=kv_heads,
                   head_dim=head_dim, hidden=int(cfg.hidden_size), intermediate=int(intermediate), vocab=lm.vocab_size,
                   bytes_per_value=itemsize, model_bytes=lm.num_parameters() * itemsize)


def pair_bytes(shape: ModelShape, prompt_tokens: int, query_tokens: int) -> int:
    """Estimated peak bytes of one (query, document) pair in a suffix forward."""
    suffix = query_tokens + SUFFIX_EXTRA
    kv = 2 * shape.layers * shape.kv_heads * shape.head_dim * (prompt_tokens + suffix) * shape.bytes_per_value * 2
    head = 3 * query_tokens * shape.vocab * 4
    act = suffix * (shape.hidden + shape.intermediate) * shape.bytes_per_value * 4
    return kv + head + act


def document_bytes(shape: ModelShape, prompt_tokens: int) -> int:
    """Estimated peak bytes of one document in a prefix forward (its KV cache + activations)."""
    kv = 2 * shape.layers * shape.kv_heads * shape.head_dim * prompt_tokens * shape.bytes_per_value
    return kv + prompt_tokens * (shape.hidden + shape.intermediate) * shape.bytes_per_value * 4


def gpu_batch_sizes(shape: ModelShape, config: "ScorerConfig", total_bytes: int, budget: float = BUDGET,
                    template_tokens: int = 32) -> tuple[int, int]:
    """``(pairs per suffix batch, documents per prefix batch)`` for a GPU with ``total_bytes`` of memory.

    Sized for the longest prompt the config allows (``max_passage_tokens + template_tokens``) and the longest
    query (``max_query_tokens``); at least the CPU defaults' 1, at most :data:`MAX_PAIRS` / :data:`MAX_DOCS`,
    rounded down to a multiple of 8. A group's KV caches (``prefix batch x document bytes``) and one suffix batch
    share the room half and half; the room is ``budget x total - model`` or :data:`LEFT_SHARE` of
    ``total - model``, whichever is larger.
    """
    if total_bytes <= 0 or not 0 < budget <= 1:
        raise ValueError(f"need total_bytes > 0 and 0 < budget <= 1, got {total_bytes}, {budget}")
    prompt = config.max_passage_tokens + template_tokens
    room = max(0, budget * total_bytes - shape.model_bytes, LEFT_SHARE * (total_bytes - shape.model_bytes))

    def size(unit: int, cap: int) -> int:
        n = int(room / 2 // unit)
        return max(1, min(cap, n - n % 8 if n >= 8 else n))

    return (size(pair_bytes(shape, prompt, config.max_query_tokens), MAX_PAIRS),
            size(document_bytes(shape, prompt), MAX_DOCS))


def fit_to_device(lm: "FrozenLM", config: "ScorerConfig", given: Collection[str] = ()) -> "ScorerConfig":
    """``config`` with GPU-sized batches when ``lm`` runs on CUDA; otherwise ``config`` unchanged.

    A batch size that was given is kept: one named in ``given`` (``"batch_size"``, ``"prefix_batch_size"``: an
    explicit ``--batch-size-rerank``, even at the CPU default's value) or one that differs from the CPU default
    (a config built by hand); the other is sized from the card's memory."""
    import dataclasses

    from .scoring import ScorerConfig

    if not str(lm.device).startswith("cuda"):
        return config
    defaults = ScorerConfig()
    kept = {name for name in ("batch_size", "prefix_batch_size")
            if name in given or getattr(config, name) != getattr(defaults, name)}
    if len(kept) == 2:
        return config
    import torch

    total = torch.cuda.get_device_properties(torch.device(lm.device)).total_memory
    pairs, docs = gpu_batch_sizes(ModelShape.of(lm), config, total)
    sized = {"batch_size": pairs, "prefix_batch_size": docs}
    return dataclasses.replace(config, **{name: value for name, value in sized.items() if name not in kept})
