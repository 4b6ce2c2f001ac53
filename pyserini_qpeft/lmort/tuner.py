"""LMORT: a small trainable tuner on top of two layers of a frozen LLM, for dense retrieval.

Layer numbering and the frozen-LM token states are in :mod:`pyserini_qpeft.lmort.states`.

The tuner (:class:`LMORTTuner`) reads the token states of the *uniformity* layer as its stream and cross-attends to
the token states of the *alignment* layer, then mean-pools to one vector. Layer analysis lives in
:mod:`pyserini_qpeft.lmort.analysis`, training in :mod:`pyserini_qpeft.lmort.train`.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..artifacts import (MetaSpec, check_base_model, library_versions, load_weights, model_card, read_meta,
                         resolve_best, save_module_folder, source_commit)
from ..errors import ModelError
from .states import POOLINGS, decoder_blocks, layer_token_states, pool, tokenize  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import torch

    from ..lm.backbone import FrozenLM

logger = logging.getLogger(__name__)

MODULE_TYPE = "lmort"
CONFIG_NAME = "lmort_config.json"
WEIGHTS_NAME = "lmort_model.safetensors"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------------------
# Config and tuner


@dataclass
class LMORTConfig:
    """Shape of an LMORT tuner.

    Attributes:
        align_layer, unif_layer: frozen-LM layers (see module docstring); the tuner's stream is the uniformity
            layer, its cross-attention memory the alignment layer.
        num_blocks, num_heads, dim, ffn_dim: tuner transformer size; ``dim=0`` means the LM hidden size.
        out_dim: embedding size (0 = ``dim``).
        pooling: ``mean`` (masked) or ``last`` real token, for the tuner output.
        normalize: L2-normalise the output (then inner product = cosine; the FAISS index is IndexFlatIP).
        temperature: InfoNCE temperature used in training.
        max_length: token budget for texts (queries and documents).
        dropout: dropout inside the tuner (training only).
    """

    align_layer: int
    unif_layer: int
    num_blocks: int = 3
    num_heads: int = 4
    dim: int = 256
    ffn_dim: int = 512
    out_dim: int = 0
    pooling: str = "mean"
    normalize: bool = True
    temperature: float = 0.05
    max_length: int = 160
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("align_layer", "unif_layer"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("num_blocks", "num_heads", "ffn_dim", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dim", "out_dim"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = default), got {getattr(self, name)}")
        if self.dim and self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def layers(self) -> tuple[int, int]:
        return (self.align_layer, self.unif_layer)

    def model_dim(self, hidden_size: int) -> int:
        return self.dim or hidden_size

    def embedding_dim(self, hidden_size: int) -> int:
        return self.out_dim or self.model_dim(hidden_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LMORTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown LMORT config keys: {sorted(unknown)}")
        return cls(**data)


@functools.lru_cache(maxsize=1)
def _build_tuner_class():
    import torch
    from torch import nn

    class _Block(nn.Module):
        """Pre-norm block: self-attention over the stream, cross-attention to the memory, feed-forward."""

        def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
            super().__init__()
            self.norm1, self.norm2, self.norm_mem, self.norm3 = (nn.LayerNorm(dim) for _ in range(4))
            self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
            self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
            self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
            self.drop = nn.Dropout(dropout)

        def forward(self, x, memory, pad):
            h = self.norm1(x)
            x = x + self.drop(self.self_attn(h, h, h, key_padding_mask=pad, need_weights=False)[0])
            m = self.norm_mem(memory)
            x = x + self.drop(self.cross_attn(self.norm2(x), m, m, key_padding_mask=pad, need_weights=False)[0])
            return x + self.drop(self.ffn(self.norm3(x)))

    class LMORTTuner(nn.Module):
        """The trainable part of LMORT.

        Input: ``unif_states`` and ``align_states`` ``[B, T, H]`` (frozen-LM token states of the two layers for the
        same tokens) and ``attention_mask`` ``[B, T]`` (1 = real token). Output: ``[B, out_dim]`` fp32, L2-normalised
        when ``config.normalize``.
        """

        def __init__(self, config: LMORTConfig, hidden_size: int):
            super().__init__()
            self.config = config
            self.hidden_size = hidden_size
            dim = config.model_dim(hidden_size)
            # LLM hidden states carry a few huge "massive activation" channels: normalise before projecting.
            self.in_norm_u = nn.LayerNorm(hidden_size)
            self.in_norm_a = nn.LayerNorm(hidden_size)
            self.proj_u = nn.Linear(hidden_size, dim)
            self.proj_a = nn.Linear(hidden_size, dim)
            self.blocks = nn.ModuleList(
                _Block(dim, config.num_heads, config.ffn_dim, config.dropout) for _ in range(config.num_blocks))
            self.out_norm = nn.LayerNorm(dim)
            out_dim = config.embedding_dim(hidden_size)
            self.out = nn.Linear(dim, out_dim) if out_dim != dim else nn.Identity()

        def forward(self, unif_states, align_states, attention_mask):
            dtype = self.proj_u.weight.dtype
            pad = ~attention_mask.bool()
            x = self.proj_u(self.in_norm_u(unif_states.to(dtype)))
            memory = self.proj_a(self.in_norm_a(align_states.to(dtype)))
            for block in self.blocks:
                x = block(x, memory, pad)
            vec = self.out(pool(self.out_norm(x), attention_mask, self.config.pooling))
            if self.config.normalize:
                vec = torch.nn.functional.normalize(vec, dim=-1)
            return vec

        def num_parameters(self) -> int:
            return sum(p.numel() for p in self.parameters())

    return LMORTTuner


def LMORTTuner(config: LMORTConfig, hidden_size: int):  # noqa: N802  (a lazily built nn.Module class)
    """Build an :class:`LMORTTuner` module (the class is created on first use so importing this module stays cheap)."""
    return _build_tuner_class()(config, hidden_size)


def check_layers(config: LMORTConfig, lm: "FrozenLM") -> None:
    for name, layer in (("align_layer", config.align_layer), ("unif_layer", config.unif_layer)):
        if layer > lm.num_layers:
            raise ModelError(f"{name}={layer} but {lm.model_id} has only {lm.num_layers} layers (0..{lm.num_layers})")


# --------------------------------------------------------------------------------------------------------------
# The LM + tuner pair used for encoding


class LMORTModel:
    """A frozen LM and a trained tuner: texts -> embeddings ``[N, out_dim]``.

    ``dim``: the tuner's output size when it is not ``config``'s (an :func:`~.ensemble.load_lmort_ensemble`'s
    concatenation of several tuners over the same layers).
    """

    def __init__(self, lm: "FrozenLM", tuner, config: LMORTConfig, dim: int | None = None):
        check_layers(config, lm)
        self.lm, self.tuner, self.config = lm, tuner, config
        self._dim = dim
        self.tuner.to(lm.device)
        self.tuner.eval()

    @property
    def dim(self) -> int:
        return self._dim or self.config.embedding_dim(self.lm.hidden_size)

    def encode_batch(self, texts: Sequence[str]) -> "torch.Tensor":
        """``texts`` -> ``[B, out_dim]`` fp32 (one LM pass up to the deeper layer, then the tuner)."""
        import torch

        batch = tokenize(self.lm, texts, self.config.max_length)
        states = layer_token_states(self.lm, batch["input_ids"], batch["attention_mask"], self.config.layers)
        with torch.no_grad():
            return self.tuner(states[self.config.unif_layer], states[self.config.align_layer],
                              batch["attention_mask"]).float()


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: config JSON + safetensors with the tuner weights only


META = MetaSpec(file=CONFIG_NAME, type_field="module_type", type=MODULE_TYPE, label="LMORT checkpoint")


def _model_card(meta: dict) -> str:
    """The checkpoint's README.md: layers, base model, parameters, the command, data and code that trained it."""
    config = meta["config"]
    record = {**meta, **(meta.get("training") or {})}  # the command and data sit at the top, counts in training
    return model_card(f"LMORT tuner over layers {config['align_layer']} (alignment) and {config['unif_layer']} "
                      "(uniformity)", meta["base_model"].get("model_id", "?"), f"{meta['trainable_parameters']:,}",
                      record, meta.get("versions", {}), meta.get("source_commit"), meta.get("dev_metrics") or {},
                      "Encode a corpus with `pyserini-qpeft encode --encoder lmort:PATH --dataset DATASET --output "
                      "INDEX`, search it with `pyserini-qpeft search --dense --index INDEX` (or Pyserini's "
                      "FaissSearcher with `pyserini_qpeft.search.encoders.pyserini_query_encoder("
                      "load_query_encoder(INDEX))`).")


def save_lmort(path: str | os.PathLike, tuner, config: LMORTConfig, lm_identity: dict,
               extra: dict | None = None) -> Path:
    """Save the tuner's weights (``lmort_model.safetensors``), config (``lmort_config.json``) and model card
    (``README.md``: what trained it, :func:`_model_card`) into ``path``.

    Only the tuner's weights are saved, never the frozen LM's. A new folder (or one holding nothing but an
    older LMORT checkpoint) is built aside and swapped in whole; a folder that holds more (a training output folder
    with its state and epochs) keeps its other files (:func:`~pyserini_qpeft.artifacts.save_module_folder`).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in tuner.state_dict().items()}
    meta = {"module_type": MODULE_TYPE, "format_version": FORMAT_VERSION, "config": config.to_dict(),
            "base_model": dict(lm_identity), "hidden_size": int(tuner.hidden_size),
            "trainable_parameters": int(tuner.num_parameters()), "versions": library_versions(),
            "source_commit": source_commit(), **(extra or {})}
    return save_module_folder(path, state, WEIGHTS_NAME, META, meta, _model_card(meta), keep_other_files=True)


def resolve_lmort_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` when it holds a tuner, else ``path/best`` when that does (a training output folder)."""
    return resolve_best(path, CONFIG_NAME)


def read_lmort_meta(path: str | os.PathLike) -> dict:
    """The JSON config of an LMORT checkpoint folder or of a training output folder's ``best/`` (raises
    :class:`ModelError` if it is neither)."""
    return read_meta(resolve_lmort_checkpoint(path), META)


def load_lmort(path: str | os.PathLike, lm: "FrozenLM") -> LMORTModel:
    """Load a checkpoint (or a training output folder's ``best/``) for use with ``lm``; refuses a checkpoint
    trained on another base model."""
    path = resolve_lmort_checkpoint(path)
    meta = read_lmort_meta(path)
    check_base_model(meta.get("base_model"), lm, path)
    try:
        config = LMORTConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:  # no config, or one this version cannot build (a newer one's)
        raise ModelError(f"{path}: its {CONFIG_NAME} holds no usable tuner config ({exc!r})") from None
    tuner = LMORTTuner(config, lm.hidden_size)
    tuner.load_state_dict(load_weights(path / WEIGHTS_NAME, tuner.state_dict(), "an LMORT tuner"), strict=True)
    return LMORTModel(lm, tuner, config)
