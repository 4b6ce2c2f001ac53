"""Training an LMORT tuner: cached frozen-LM states, InfoNCE with in-batch and BM25 hard negatives.

The LLM is frozen, so the token states of the two chosen layers are computed once (running the LLM only up to the
deeper layer) and cached on disk as safetensors shards; every epoch then costs only the tuner. A dev split carved
from the training queries selects the best epoch (MRR@10 over the cached document pool).

Output folder layout::

    lmort_config.json, lmort_model.safetensors   best epoch so far (what ``encode --encoder lmort:DIR`` loads)
    epochs/epoch-NNN/                            every epoch's tuner
    train_state.json, optimizer.safetensors      for --resume
    state-cache/                                 cached LM states (reusable across runs with the same key)
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from .errors import InputError, ModelError
from .fileio import atomic_write
from .lmort import (LMORTConfig, LMORTTuner, check_layers, layer_token_states, read_lmort_meta, save_lmort,
                    tokenize)

if TYPE_CHECKING:
    import torch

    from .backbone import FrozenLM
    from .types import Run

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


@dataclass
class TrainConfig:
    """Optimisation settings (the tuner's shape is :class:`LMORTConfig`)."""

    epochs: int = 8
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    hard_negatives: int = 1
    negative_depth: int = 30
    dev_fraction: float = 0.1
    seed: int = 13
    cache_batch_size: int = 16

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "cache_batch_size", "negative_depth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hard_negatives < 0:
            raise ValueError(f"hard_negatives must be >= 0, got {self.hard_negatives}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in [0, 1), got {self.dev_fraction}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class Example:
    """One training query: its text, relevant docids and BM25 hard negatives (ranked)."""

    qid: str
    text: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)


def build_examples(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], negatives: "Run | None",
                   corpus_ids: set[str], depth: int = 30) -> list[Example]:
    """Training examples from qrels (relevance > 0) and a first-stage run (top non-relevant docs as negatives)."""
    examples = []
    for qid, judged in qrels.items():
        positives = sorted(d for d, rel in judged.items() if rel > 0 and d in corpus_ids)
        if not positives or qid not in queries:
            continue
        negs: list[str] = []
        if negatives is not None and qid in negatives:
            negs = [h.docid for h in negatives[qid][:depth] if h.docid not in judged and h.docid in corpus_ids]
        examples.append(Example(qid, queries[qid], positives, negs))
    if not examples:
        raise InputError("no training examples: no judged query has a relevant document in the corpus")
    return examples


def split_dev(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Deterministic train/dev split of the training queries."""
    order = sorted(examples, key=lambda e: e.qid)
    random.Random(seed).shuffle(order)
    n_dev = int(round(len(order) * fraction))
    if fraction > 0 and len(order) >= 4:
        n_dev = max(n_dev, 1)
    else:
        n_dev = 0
    return order[n_dev:], order[:n_dev]


# --------------------------------------------------------------------------------------------------------------
# State cache


class StateCache:
    """Token states of two layers of a frozen LM for a set of texts, in safetensors shards.

    Each shard holds ``ids`` (in ``index.json``), ``offsets`` ``[n+1]`` and flat ``align``/``unif`` token states
    ``[total_tokens, H]`` (bf16, or fp16 for an fp16 LM). The cache key (model identity, layers, max length) is checked on reuse.
    """

    def __init__(self, folder: str | os.PathLike, key: dict):
        self.folder = Path(folder)
        self.key = key
        self.entries: dict[str, tuple[int, int]] = {}  # id -> (shard, position)
        self._shards: dict[int, dict] = {}

    def _index_path(self) -> Path:
        return self.folder / "index.json"

    def _load_index(self) -> list[list[str]]:
        if not self._index_path().is_file():
            return []
        data = json.loads(self._index_path().read_text(encoding="utf-8"))
        if data.get("key") != self.key:
            raise ModelError(f"{self.folder}: state cache was built with {data.get('key')}, not {self.key}; "
                             "delete it or choose another --cache-dir")
        return data["shards"]

    def build(self, lm: "FrozenLM", texts: Mapping[str, str], layers: tuple[int, int], max_length: int,
              batch_size: int = 16, shard_size: int = 512, progress: bool = True) -> None:
        """Compute states for every id of ``texts`` not yet cached (resumable shard by shard)."""
        import torch
        from safetensors.torch import save
        from tqdm.auto import tqdm

        self.folder.mkdir(parents=True, exist_ok=True)
        shards = self._load_index()
        done = {i for shard in shards for i in shard}
        todo = [i for i in texts if i not in done]
        lengths = dict(zip(todo, (len(x) for x in lm.tokenizer([texts[i] for i in todo], truncation=True,
                                                              max_length=max_length)["input_ids"]))) if todo else {}
        todo.sort(key=lambda i: (lengths[i], i))
        align_layer, unif_layer = layers
        # bf16 halves the cache of an fp32 LM; its range covers LLMs' huge activation outliers (fp16's may not).
        store_dtype = torch.float16 if lm.dtype == torch.float16 else torch.bfloat16
        bar = tqdm(total=len(todo), desc="caching LM states", unit="text", disable=not progress)
        for s in range(0, len(todo), shard_size):
            shard_ids = todo[s:s + shard_size]
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
            number = len(shards)
            with atomic_write(self.folder / f"shard-{number:05d}.safetensors", mode="wb") as out:
                out.write(save(tensors))
            shards.append(shard_ids)
            with atomic_write(self._index_path()) as out:
                json.dump({"format": CACHE_FORMAT, "key": self.key, "shards": shards}, out)
        bar.close()
        self.load()

    def load(self) -> None:
        """Read the index and all shards into memory."""
        from safetensors.torch import load_file

        shards = self._load_index()
        self.entries = {i: (s, p) for s, ids in enumerate(shards) for p, i in enumerate(ids)}
        self._shards = {s: load_file(str(self.folder / f"shard-{s:05d}.safetensors")) for s in range(len(shards))}

    def __contains__(self, key: str) -> bool:
        return key in self.entries

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


# --------------------------------------------------------------------------------------------------------------
# Training


def _encode_cached(tuner, cache: StateCache, keys: Sequence[str], batch_size: int = 64) -> "torch.Tensor":
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(keys), batch_size):
            unif, align, mask = cache.batch(keys[s:s + batch_size])
            out.append(tuner(unif, align, mask))
    return torch.cat(out)


def evaluate_dev(tuner, cache: StateCache, dev: Sequence[Example], doc_pool: Sequence[str]) -> dict[str, float]:
    """MRR@10 and R@10 of dev queries over ``doc_pool`` (cached docids), tuner in eval mode."""
    import torch

    if not dev:
        return {}
    was_training = tuner.training
    tuner.eval()
    docs = _encode_cached(tuner, cache, [f"d:{d}" for d in doc_pool])
    queries = _encode_cached(tuner, cache, [f"q:{e.qid}" for e in dev])
    scores = queries @ docs.T
    top = torch.topk(scores, k=min(10, len(doc_pool)), dim=1).indices.tolist()
    mrr = recall = 0.0
    for example, ranked in zip(dev, top):
        ranked_ids = [doc_pool[i] for i in ranked]
        positives = set(example.positives)
        for rank, docid in enumerate(ranked_ids, start=1):
            if docid in positives:
                mrr += 1.0 / rank
                break
        recall += len(positives & set(ranked_ids)) / len(positives)
    tuner.train(was_training)
    return {"mrr@10": mrr / len(dev), "recall@10": recall / len(dev)}


def info_nce(q: "torch.Tensor", d: "torch.Tensor", targets: "torch.Tensor", invalid: "torch.Tensor",
             temperature: float) -> "torch.Tensor":
    """InfoNCE: ``q`` ``[B, D]`` against all docs ``d`` ``[M, D]``; ``targets`` ``[B]`` index the positive;
    ``invalid`` ``[B, M]`` masks other relevant docs of the same query (false negatives)."""
    import torch

    logits = (q @ d.T) / temperature
    logits = logits.masked_fill(invalid, torch.finfo(logits.dtype).min)
    return torch.nn.functional.cross_entropy(logits, targets)


def _save_optimizer(path: Path, optimizer, scheduler) -> None:
    from safetensors.torch import save

    tensors, meta = {}, {"param_groups": optimizer.state_dict()["param_groups"], "scheduler": scheduler.state_dict()}
    for idx, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
    with atomic_write(path, mode="wb") as out:
        out.write(save(tensors, metadata={"meta": json.dumps(meta)}))


def _load_optimizer(path: Path, optimizer, scheduler) -> None:
    from safetensors import safe_open

    state: dict[int, dict] = {}
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["meta"])
        for key in handle.keys():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = handle.get_tensor(key)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])


def train_lmort(lm: "FrozenLM", examples: Sequence[Example], corpus: Mapping[str, str], config: LMORTConfig,
                train: TrainConfig, output: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                resume: bool = False, progress: bool = True, extra_meta: dict | None = None) -> dict:
    """Train an LMORT tuner; returns a summary (best epoch, dev metrics, parameter share, timings).

    Args:
        examples: training queries with positives and hard negatives (:func:`build_examples`).
        corpus: docid -> document text (only the docs the examples use are read).
    """
    import torch
    from tqdm.auto import tqdm

    check_layers(config, lm)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    state_path = output / "train_state.json"
    if state_path.exists() and not resume:
        raise InputError("output folder holds a training run; pass --resume to continue it or choose another "
                         "--output", str(output))
    started = time.time()
    train_set, dev_set = split_dev(examples, train.dev_fraction, train.seed)
    doc_ids = sorted({d for e in examples for d in (*e.positives, *e.negatives[:train.negative_depth])})
    # Dev queries are ranked against their own positives and hard negatives (a small, hard pool).
    dev_pool = sorted({d for e in dev_set for d in (*e.positives, *e.negatives[:train.negative_depth])})
    texts = {f"q:{e.qid}": e.text for e in examples}
    texts.update({f"d:{d}": corpus[d] for d in doc_ids})
    key = {"model": lm.identity(), "layers": list(config.layers), "max_length": config.max_length}
    cache = StateCache(cache_dir or output / "state-cache", key)
    t0 = time.time()
    cache.build(lm, texts, config.layers, config.max_length, batch_size=train.cache_batch_size, progress=progress)
    cache_seconds = time.time() - t0

    torch.manual_seed(train.seed)
    tuner = LMORTTuner(config, lm.hidden_size)
    share = 100.0 * tuner.num_parameters() / lm.num_parameters()
    logger.info("LMORT tuner: %d trainable parameters = %.2f%% of the frozen LM (%d)", tuner.num_parameters(), share,
                lm.num_parameters())
    optimizer = torch.optim.AdamW(tuner.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    steps_per_epoch = max(1, (len(train_set) + train.batch_size - 1) // train.batch_size)
    total = steps_per_epoch * train.epochs
    warmup = int(total * train.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then linear decay to 0
        optimizer, lambda step: (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup)))
    history: list[dict] = []
    best = {"epoch": 0, "score": float("-inf")}
    first_epoch = 1
    if resume and state_path.exists():
        saved = json.loads(state_path.read_text(encoding="utf-8"))
        if saved.get("config") != config.to_dict():
            raise InputError("--resume with a different LMORT config than the saved run", str(state_path))
        last = output / "epochs" / f"epoch-{saved['epoch']:03d}"
        from safetensors.torch import load_file

        read_lmort_meta(last)
        tuner.load_state_dict(load_file(str(last / "lmort_model.safetensors")))
        _load_optimizer(output / "optimizer.safetensors", optimizer, scheduler)
        history, best, first_epoch = saved["history"], saved["best"], saved["epoch"] + 1
        logger.info("resuming after epoch %d", saved["epoch"])
    meta = {"train_config": asdict(train), "train_queries": len(train_set), "dev_queries": len(dev_set),
            "doc_pool": len(doc_ids), "dev_pool": len(dev_pool), **(extra_meta or {})}
    for epoch in range(first_epoch, train.epochs + 1):
        rng = random.Random(train.seed * 1000 + epoch)
        order = list(train_set)
        rng.shuffle(order)
        tuner.train()
        losses = []
        bar = tqdm(range(0, len(order), train.batch_size), desc=f"epoch {epoch}/{train.epochs}", unit="batch",
                   disable=not progress)
        for start in bar:
            batch = order[start:start + train.batch_size]
            docs: list[str] = []
            targets = []
            for e in batch:
                targets.append(len(docs))
                docs.append(rng.choice(e.positives))
                pool_negs = e.negatives[:train.negative_depth]
                if pool_negs and train.hard_negatives:
                    docs.extend(rng.sample(pool_negs, min(train.hard_negatives, len(pool_negs))))
            # The same doc may appear twice in a batch; keep one copy so it is not its own negative.
            unique = list(dict.fromkeys(docs))
            where = {d: i for i, d in enumerate(unique)}
            target_idx = torch.tensor([where[docs[t]] for t in targets])
            invalid = torch.zeros(len(batch), len(unique), dtype=torch.bool)
            for row, e in enumerate(batch):
                for pos in e.positives:
                    if pos in where and where[pos] != int(target_idx[row]):
                        invalid[row, where[pos]] = True
            qu, qa, qm = cache.batch([f"q:{e.qid}" for e in batch])
            du, da, dm = cache.batch([f"d:{d}" for d in unique])
            loss = info_nce(tuner(qu, qa, qm), tuner(du, da, dm), target_idx, invalid, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tuner.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        bar.close()
        dev = evaluate_dev(tuner, cache, dev_set, dev_pool)
        record = {"epoch": epoch, "train_loss": sum(losses) / max(1, len(losses)), **{f"dev_{k}": v for k, v in dev.items()}}
        history.append(record)
        logger.info("epoch %d: %s", epoch, record)
        score = dev.get("mrr@10", -record["train_loss"])
        epoch_dir = output / "epochs" / f"epoch-{epoch:03d}"
        save_lmort(epoch_dir, tuner, config, lm.identity(), extra={**meta, "epoch": epoch, "metrics": record})
        if score > best["score"]:
            best = {"epoch": epoch, "score": score}
            save_lmort(output, tuner, config, lm.identity(), extra={**meta, "epoch": epoch, "metrics": record})
        _save_optimizer(output / "optimizer.safetensors", optimizer, scheduler)
        with atomic_write(state_path) as out:
            json.dump({"epoch": epoch, "config": config.to_dict(), "history": history, "best": best}, out, indent=2,
                      sort_keys=True)
    summary = {"best_epoch": best["epoch"], "best_dev_score": best["score"], "history": history,
               "trainable_parameters": tuner.num_parameters(), "lm_parameters": lm.num_parameters(),
               "trainable_percent": round(share, 3), "cache_seconds": round(cache_seconds, 1),
               "total_seconds": round(time.time() - started, 1), **meta}
    with atomic_write(output / "train_summary.json") as out:
        json.dump(summary, out, indent=2, sort_keys=True)
    return summary
