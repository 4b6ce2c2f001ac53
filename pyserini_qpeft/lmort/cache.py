"""A disk cache of a frozen LM's token states at two layers, so LMORT epochs never run the LM.

The LLM is frozen, so the token states of the two chosen layers are computed once (running the LLM only up to the
deeper layer) and stored as safetensors shards; every epoch then costs only the tuner. A key is the text's kind
(:data:`QUERY_KEY`, :data:`DOC_KEY`, :data:`PSEUDO_KEY`, :data:`REST_KEY`) followed by its id: ``q:<qid>``,
``d:<docid>``, and for :mod:`.pseudo` pairs ``p:<docid>`` and ``r:<docid>``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from ..artifacts import atomic_write, check_base_model, read_json
from ..errors import ModelError
from ..lm.backbone import dtype_flag
from .states import layer_token_states, tokenize

if TYPE_CHECKING:
    import torch

    from ..lm.backbone import FrozenLM
    from ..training.parallel import DataParallel

CACHE_FORMAT = 1
QUERY_KEY = "q:"  # a query, by qid
DOC_KEY = "d:"  # a document's whole text (``Document.contents()``), by docid
PSEUDO_KEY = "p:"  # a document's pseudo-query sentence (:mod:`.pseudo`), by docid
REST_KEY = "r:"  # a document without its pseudo-query sentence, by docid


def _digest(token_ids: Sequence[int]) -> str:
    """sha1 of a text's token ids (what its cached states were computed from)."""
    import hashlib

    return hashlib.sha1(json.dumps(list(token_ids)).encode("ascii")).hexdigest()


def state_key(lm: "FrozenLM", layers: Sequence[int], max_length: int) -> dict:
    """The key a cache of ``lm``'s states at ``layers`` (texts cut at ``max_length`` tokens) is built and checked
    under: training (``train lmort --cache-dir``) and encoding (``encode --state-cache``) share a cache through it."""
    return {"model": lm.identity(), "layers": list(layers), "max_length": max_length}


class StateCache:
    """Token states of two layers of a frozen LM for a set of texts, in safetensors shards.

    Each shard holds ``ids`` (in ``index.json``), ``offsets`` ``[n+1]`` and flat ``align``/``unif`` token states
    ``[total_tokens, H]`` (bf16, or fp16 for an fp16 LM). The cache key (model identity, layers, max length) is checked on reuse.
    """

    def __init__(self, folder: str | os.PathLike, key: dict):
        self.folder = Path(folder)
        self.key = key
        self.entries: dict[str, tuple[int, int]] = {}  # id -> (shard, position)
        self.digests: dict[str, str] = {}  # id -> sha1 of the token ids its states were computed from
        self._shards: dict[int, dict] = {}

    def _index_path(self) -> Path:
        return self.folder / "index.json"

    def _load_index(self) -> list[list[str]]:
        if not self._index_path().is_file():
            return []
        data = read_json(self._index_path(), "cannot read the state cache's index (delete the cache folder to rebuild "
                         "it)", ModelError)
        check_base_model((data.get("key") or {}).get("model"), self.key["model"], self.folder, made="cached states of")
        stored = dict(data.get("key") or {})
        if {**stored, "model": None} != {**self.key, "model": None}:  # the model: checked just above
            raise ModelError(f"{self.folder}: state cache was built with {data.get('key')}, not {self.key}; "
                             "delete it or use another folder (train lmort --cache-dir, encode --state-cache)")
        self.digests = dict(data.get("tokens") or {})  # caches written before it recorded none: lengths only
        return data["shards"]

    def build(self, lm: "FrozenLM", texts: Mapping[str, str], layers: tuple[int, int], max_length: int,
              batch_size: int = 16, shard_size: int = 512, progress: bool = True,
              parallel: "DataParallel | None" = None) -> None:
        """Compute states for every id of ``texts`` not yet cached (resumable shard by shard); refuses (ModelError,
        before computing anything) a stored id whose text now has other tokens (within ``max_length``).

        With ``parallel`` (data-parallel training), new shard ``k`` is computed by rank ``k % world_size`` (the same
        shards, batches and bits as one process) and rank 0 indexes them once all ranks are done. One job builds at a
        time (a second one waits: see :meth:`_writer_lock`).
        """
        from ..training.parallel import SINGLE

        parallel = parallel or SINGLE
        lock = None
        if parallel.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = self._writer_lock()  # another job adding to this cache (seeds share one) goes first
        try:
            self._build(lm, texts, layers, max_length, batch_size, shard_size, progress, parallel)
        finally:
            if lock is not None:
                lock.close()

    def _writer_lock(self):
        """An exclusive flock on ``.build.lock`` in the folder: one job adds states at a time (two appended shards
        under one number and indexed ids of another shard). Waits for a job that holds it, saying so."""
        from ..artifacts import lock_exclusively

        return lock_exclusively(self.folder / ".build.lock", "another job is adding LM states to this cache; "
                                "waiting for it", source=self.folder, wait=True)

    def _build(self, lm: "FrozenLM", texts: Mapping[str, str], layers: tuple[int, int], max_length: int,
               batch_size: int, shard_size: int, progress: bool, parallel: "DataParallel") -> None:
        """:meth:`build` inside the writer lock (ranks other than 0 of a data-parallel run follow rank 0)."""
        import torch
        from safetensors.torch import save
        from tqdm.auto import tqdm

        parallel.barrier()
        shards = self._load_index()
        done = {i for shard in shards for i in shard}
        todo = [i for i in texts if i not in done]
        ids = list(texts)
        tokens = lm.tokenizer([texts[i] for i in ids], truncation=True, max_length=max_length)["input_ids"] \
            if ids else []
        lengths = {i: len(t) for i, t in zip(ids, tokens)}
        digests = {i: _digest(t) for i, t in zip(ids, tokens)}
        checked = len(todo) < len(ids)
        if checked:
            self._check_texts(lengths, digests)  # loads the stored shards
        todo.sort(key=lambda i: (lengths[i], i))
        align_layer, unif_layer = layers
        # bf16 halves the cache of an fp32 LM; its range covers LLMs' huge activation outliers (fp16's may not).
        store_dtype = torch.float16 if lm.dtype == torch.float16 else torch.bfloat16
        chunks = [todo[s:s + shard_size] for s in range(0, len(todo), shard_size)]
        first = len(shards)
        mine = [k for k in range(len(chunks)) if k % parallel.world_size == parallel.rank]
        bar = tqdm(total=sum(len(chunks[k]) for k in mine), desc="caching LM states", unit="text",
                   disable=not progress)
        for k in mine:
            shard_ids = chunks[k]
            aligns, unifs, lens = [], [], []
            for b in range(0, len(shard_ids), batch_size):
                ids = shard_ids[b:b + batch_size]
                batch = tokenize(lm, [texts[i] for i in ids], max_length)
                states = layer_token_states(lm, batch["input_ids"], batch["attention_mask"], layers)
                mask = batch["attention_mask"].bool()
                for row in range(len(ids)):
                    keep = mask[row]
                    aligns.append(states[align_layer][row][keep].to("cpu", store_dtype))
                    unifs.append(states[unif_layer][row][keep].to("cpu", store_dtype))
                    lens.append(int(keep.sum()))
                bar.update(len(ids))
            offsets = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int64)
            tensors = {"offsets": offsets, "align": torch.cat(aligns).contiguous()}
            if unif_layer != align_layer:
                tensors["unif"] = torch.cat(unifs).contiguous()
            with atomic_write(self.folder / f"shard-{first + k:05d}.safetensors", mode="wb") as out:
                out.write(save(tensors))
            if not parallel.active:
                shards.append(shard_ids)
                self.digests.update((i, digests[i]) for i in shard_ids)
                self._write_index(shards)
        bar.close()
        if parallel.active:
            parallel.barrier()
            if parallel.is_main and chunks:
                self.digests.update((i, digests[i]) for chunk in chunks for i in chunk)
                self._write_index(shards + chunks)
            parallel.barrier()
        if chunks or not checked:  # nothing new since _check_texts loaded the shards: no second read
            self.load()

    def _check_texts(self, lengths: Mapping[str, int], digests: Mapping[str, str]) -> None:
        """Keys are ids (``q:<qid>``, ``d:<docid>``), so a folder filled from another dataset, or from an earlier
        version of the corpus, could answer for an id: every stored text asked for again must have the tokens of the
        text given for it now (their digest; a cache from before digests were kept: as many tokens)."""
        self.load()
        for i, length in lengths.items():
            if i not in self.entries:
                continue
            stored = self.digests.get(i)
            if (stored is not None and stored != digests[i]) or (stored is None and self.length(i) != length):
                raise ModelError(f"{self.folder}: {i} is stored from another text than the one given for it now: the "
                                 "folder holds another dataset's states or an earlier version of this corpus (delete "
                                 "it, or use one folder per dataset)")

    def _write_index(self, shards: list[list[str]]) -> None:
        with atomic_write(self._index_path()) as out:
            json.dump({"format": CACHE_FORMAT, "key": self.key, "shards": shards, "tokens": self.digests}, out)

    def load(self) -> None:
        """Read the index and all shards into memory."""
        from safetensors.torch import load_file

        shards = self._load_index()
        self.entries = {i: (s, p) for s, ids in enumerate(shards) for p, i in enumerate(ids)}
        self._shards = {s: load_file(str(self.folder / f"shard-{s:05d}.safetensors")) for s in range(len(shards))}

    def store_dtype(self) -> str | None:
        """How the loaded shards store states (``"bf16"`` or ``"fp16"``); None before any shard is loaded."""
        for tensors in self._shards.values():
            return dtype_flag(tensors["align"].dtype)
        return None

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def length(self, key: str) -> int:
        """Tokens stored for ``key``."""
        shard, pos = self.entries[key]
        offsets = self._shards[shard]["offsets"]
        return int(offsets[pos + 1] - offsets[pos])

    def get(self, key: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(unif states ``[T, H]``, align states ``[T, H]``) of one cached text."""
        shard, pos = self.entries[key]
        tensors = self._shards[shard]
        lo, hi = int(tensors["offsets"][pos]), int(tensors["offsets"][pos + 1])
        align = tensors["align"][lo:hi]
        return tensors.get("unif", tensors["align"])[lo:hi], align

    def batch(self, keys: Sequence[str], dtype=None) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """Right-padded ``unif`` and ``align`` ``[B, T, H]`` plus mask ``[B, T]`` for ``keys``."""
        import torch

        pairs = [self.get(k) for k in keys]
        length = max(u.shape[0] for u, _ in pairs)
        hidden = pairs[0][0].shape[1]
        dtype = dtype or torch.float32
        unif = torch.zeros(len(keys), length, hidden, dtype=dtype)
        align = torch.zeros(len(keys), length, hidden, dtype=dtype)
        mask = torch.zeros(len(keys), length, dtype=torch.long)
        for row, (u, a) in enumerate(pairs):
            unif[row, :u.shape[0]] = u.to(dtype)
            align[row, :a.shape[0]] = a.to(dtype)
            mask[row, :u.shape[0]] = 1
        return unif, align, mask


def encode_cached(tuner, cache: StateCache, keys: Sequence[str], batch_size: int = 64) -> "torch.Tensor":
    """Tuner embeddings ``[len(keys), D]`` of cached texts, on the tuner's device (no gradients; the caller sets
    eval mode)."""
    import torch

    device = next(tuner.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(keys), batch_size):
            out.append(tuner(*(t.to(device) for t in cache.batch(keys[s:s + batch_size]))))
    return torch.cat(out)
