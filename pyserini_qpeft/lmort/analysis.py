"""LMORT layer analysis: alignment and uniformity of every layer of a frozen LLM.

For each layer, texts are pooled into one L2-normalised vector ``f(x)``, then

* alignment  ``L_align = E_{(x, y) positive} ||f(x) - f(y)||^2``  (lower = relevant pairs closer),
* uniformity ``L_unif  = log E_{x != y} exp(-2 ||f(x) - f(y)||^2)``  (lower = spread over the sphere).

Both come from one forward pass per batch (``output_hidden_states``). Use training pairs only.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..artifacts import atomic_write, check_base_model, write_json
from ..errors import InputError
from .states import POOLINGS, layer_token_states, pool, tokenize

if TYPE_CHECKING:
    import numpy as np

    from ..data import BeirDataset
    from ..lm.backbone import FrozenLM

logger = logging.getLogger(__name__)


@dataclass
class LayerReport:
    """Per-layer alignment/uniformity (index = layer number, 0 = embeddings) and the chosen layers."""

    model: dict
    pooling: str
    max_length: int
    num_pairs: int
    num_uniformity_texts: int
    alignment: list[float]
    uniformity: list[float]
    align_layer: int
    unif_layer: int
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LayerReport":
        return cls(**data)

    def write_json(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read_json(cls, path: str | os.PathLike) -> "LayerReport":
        """The report in ``path`` (``lmort analyze``'s layer_report.json); InputError naming the file when it is
        not one (not JSON, fields missing or unknown)."""
        from ..artifacts import read_json
        from ..errors import InputError

        data = read_json(path, "cannot read the layer report")
        try:
            return cls.from_dict(data)
        except TypeError as exc:
            raise InputError(f"not a layer report of `pyserini-qpeft lmort analyze` ({exc})", str(path)) from None


def pooled_layer_vectors(lm: "FrozenLM", texts: Sequence[str], layers: Sequence[int] | None = None,
                         pooling: str = "mean", max_length: int = 256, batch_size: int = 32,
                         normalize: bool = True, progress: bool = False, desc: str = "encode") -> dict[int, "np.ndarray"]:
    """Pooled (optionally L2-normalised) vectors of ``texts`` at ``layers`` (default: all, 0..N).

    Texts are batched by token length (shortest first) to waste little compute on padding; the result is in the
    input order. Returns layer -> ``[len(texts), H]`` float32.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    layers = list(range(lm.num_layers + 1)) if layers is None else sorted(set(layers))
    lengths = [len(ids) for ids in lm.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    out = {layer: np.zeros((len(texts), lm.hidden_size), dtype=np.float32) for layer in layers}
    bar = tqdm(total=len(texts), desc=desc, unit="text", disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenize(lm, [texts[i] for i in idx], max_length)
        states = layer_token_states(lm, batch["input_ids"], batch["attention_mask"], layers)
        for layer in layers:
            vec = pool(states[layer], batch["attention_mask"], pooling)
            if normalize:
                vec = torch.nn.functional.normalize(vec, dim=-1)
            out[layer][idx] = vec.cpu().numpy()
        bar.update(len(idx))
    bar.close()
    return out


def alignment(x: "np.ndarray", y: "np.ndarray") -> float:
    """``E ||x_i - y_i||^2`` over row pairs (x, y ``[P, H]``)."""
    import numpy as np

    diff = x.astype(np.float64) - y.astype(np.float64)
    return float((diff * diff).sum(1).mean())


def uniformity(x: "np.ndarray", t: float = 2.0) -> float:
    """``log E_{i != j} exp(-t ||x_i - x_j||^2)`` over distinct rows of ``x`` ``[N, H]`` (N >= 2)."""
    import numpy as np

    n = x.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least 2 texts")
    x = x.astype(np.float64)
    sq = (x * x).sum(1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    vals = -t * dist[~np.eye(n, dtype=bool)]
    top = vals.max()
    return float(top + math.log(np.exp(vals - top).mean()))


def mean_pairwise_distance(x: "np.ndarray") -> float:
    """``E_{i != j} ||x_i - x_j||^2`` over distinct rows of ``x`` ``[N, H]``."""
    import numpy as np

    n = x.shape[0]
    x = x.astype(np.float64)
    sq = (x * x).sum(1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    return float(dist.sum() / (n * (n - 1)))


def analyze_layers(lm: "FrozenLM", pairs: Sequence[tuple[str, str]], texts_for_uniformity: Sequence[str],
                   pooling: str = "mean", max_length: int = 256, batch_size: int = 32,
                   progress: bool = False, include_embeddings: bool = False) -> LayerReport:
    """Alignment and uniformity of every layer; picks the best-aligned and the most uniform layer (minimum each)
    among the transformer layers 1..L, as the LMORT paper does (its tuner is meant to use what the LM computes).

    Args:
        pairs: (query text, relevant document text) training pairs.
        texts_for_uniformity: a sample of training texts (queries and documents).
        include_embeddings: also let layer 0 (the input embeddings) be chosen -- an ablation; on SmolLM2 and
            SciFact it wins uniformity, and the tuner then sees 2 of 30 blocks.
    """
    if not pairs:
        raise ValueError("analyze_layers needs at least one (query, document) pair")
    start = time.time()
    queries = sorted({q for q, _ in pairs})
    docs = sorted({d for _, d in pairs})
    unif_texts = list(dict.fromkeys(texts_for_uniformity))
    texts = list(dict.fromkeys([*queries, *docs, *unif_texts]))
    where = {t: i for i, t in enumerate(texts)}
    vectors = pooled_layer_vectors(lm, texts, None, pooling, max_length, batch_size, progress=progress,
                                   desc="layer analysis")
    qi = [where[q] for q, _ in pairs]
    di = [where[d] for _, d in pairs]
    ui = [where[t] for t in unif_texts]
    align = [alignment(vectors[layer][qi], vectors[layer][di]) for layer in sorted(vectors)]
    unif = [uniformity(vectors[layer][ui]) for layer in sorted(vectors)]
    # Raw LLM states are anisotropic: a layer where every text maps to nearly the same vector has a tiny
    # alignment loss for free. Alignment relative to the mean distance of random pairs exposes that collapse.
    relative = [a / max(mean_pairwise_distance(vectors[layer][ui]), 1e-12) for a, layer in zip(align, sorted(vectors))]
    candidates = range(0 if include_embeddings or len(align) == 1 else 1, len(align))
    best_align = min(candidates, key=lambda i: (align[i], i))
    best_unif = min(candidates, key=lambda i: (unif[i], i))
    every = range(len(align))
    report = LayerReport(model=lm.identity(), pooling=pooling, max_length=max_length, num_pairs=len(pairs),
                         num_uniformity_texts=len(unif_texts), alignment=align, uniformity=unif,
                         align_layer=best_align, unif_layer=best_unif, seconds=round(time.time() - start, 2),
                         extra={"relative_alignment": relative,
                                "relative_align_layer": min(candidates, key=lambda i: (relative[i], i)),
                                "candidates": "all layers (0 = input embeddings)" if include_embeddings else
                                              "transformer layers 1..L (input embeddings excluded)",
                                "with_embeddings": [min(every, key=lambda i: (align[i], i)),
                                                    min(every, key=lambda i: (unif[i], i))]})
    logger.info("alignment best at layer %d (%.4f), uniformity best at layer %d (%.4f)",
                best_align, align[best_align], best_unif, unif[best_unif])
    return report


def plot_report(report: LayerReport, path: str | os.PathLike, title: str | None = None) -> None:
    """Both curves vs layer (two y axes), chosen layers marked; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(range(len(report.alignment)))
    fig, ax1 = plt.subplots(figsize=(8, 5), dpi=120)
    ax2 = ax1.twinx()
    l1, = ax1.plot(layers, report.alignment, "o-", color="tab:blue", ms=4, label="alignment (lower = better)")
    l2, = ax2.plot(layers, report.uniformity, "s-", color="tab:red", ms=4, label="uniformity (lower = better)")
    v1 = ax1.axvline(report.align_layer, color="tab:blue", ls="--", lw=1.2,
                     label=f"best alignment: layer {report.align_layer}")
    v2 = ax2.axvline(report.unif_layer, color="tab:red", ls=":", lw=1.8,
                     label=f"best uniformity: layer {report.unif_layer}")
    ax1.set_xlabel("layer (0 = embeddings)")
    ax1.set_ylabel("alignment  E||f(q) - f(d+)||²", color="tab:blue")
    ax2.set_ylabel("uniformity  log E exp(-2||f(x) - f(y)||²)", color="tab:red")
    ax1.tick_params(axis="y", colors="tab:blue")
    ax2.tick_params(axis="y", colors="tab:red")
    ax1.set_xticks(layers if len(layers) <= 20 else layers[::2])
    ax1.grid(alpha=0.3)
    model = report.model.get("model_id", "LM")
    ax1.set_title(title or f"{model}: {report.pooling}-pooled layers, {report.num_pairs} pairs", fontsize=10)
    fig.legend(handles=[l1, l2, v1, v2], loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = Path(path)
    with atomic_write(path, mode="wb") as out:
        fig.savefig(out, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------
# From a dataset: what `lmort analyze` and `lmort train --layers auto` run


def training_pairs(dataset: "BeirDataset", split: str, limit: int | None, seed: int) -> list[tuple[str, str]]:
    """(query text, relevant document text) pairs from ``split``'s qrels (never test), a seeded sample of ``limit``."""
    from ..training.data import check_split

    check_split(split)
    qrels = dataset.qrels(split)
    queries = dataset.queries()
    corpus = dataset.load_corpus()
    pairs = sorted((qid, docid) for qid, judged in qrels.items() for docid, rel in judged.items()
                   if rel > 0 and qid in queries and docid in corpus)
    if not pairs:
        raise InputError(f"no relevant (query, document) pairs in split {split!r}", str(dataset.path))
    if limit and len(pairs) > limit:
        pairs = sorted(random.Random(seed).sample(pairs, limit))
    return [(queries[q], corpus[d].contents()) for q, d in pairs]


def run_analysis(lm: "FrozenLM", dataset: "BeirDataset", split: str, pairs: int | None = 500,
                 uniformity_texts: int = 1000, pooling: str = "mean", max_length: int = 256, batch_size: int = 16,
                 seed: int = 13, output: str | os.PathLike | None = None, progress: bool = False,
                 include_embeddings: bool = False) -> LayerReport:
    """Analyse every layer on up to ``pairs`` training pairs of ``split``; write ``layer_report.json`` and
    ``layers.png`` into ``output`` when given (``include_embeddings``: see :func:`analyze_layers`)."""
    sample = training_pairs(dataset, split, pairs, seed)
    texts = list(dict.fromkeys(t for pair in sample for t in pair))
    if len(texts) > uniformity_texts:
        texts = random.Random(seed).sample(texts, uniformity_texts)
    report = analyze_layers(lm, sample, texts, pooling=pooling, max_length=max_length, batch_size=batch_size,
                            progress=progress, include_embeddings=include_embeddings)
    report.extra.update({"dataset": str(dataset.path), "split": split, "seed": seed})
    if output is not None:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        report.write_json(output / "layer_report.json")
        plot_report(report, output / "layers.png", title=f"{dataset.name} {split}: {lm.model_id} ({pooling} pooling)")
    return report


def choose_layers(lm: "FrozenLM", dataset: "BeirDataset", split: str, analysis: str | os.PathLike | None,
                  pooling: str, max_length: int, seed: int, output: str | os.PathLike,
                  progress: bool = False) -> tuple[int, int]:
    """(alignment layer, uniformity layer) from a saved ``layer_report.json`` (must be of ``lm``), or from a fresh
    analysis of ``split`` written to ``output``."""
    if analysis:
        report = LayerReport.read_json(analysis)
        check_base_model(report.model, lm, analysis, made="analysed with")
        if report.pooling != pooling:  # (another max length is the recorded recipe: analysis 256, tuner 160)
            logger.warning("%s chose its layers from %s-pooled states; this tuner pools by %s (`lmort analyze "
                           "--pooling %s` measures the layers as the tuner pools)", analysis, report.pooling, pooling,
                           pooling)
    else:
        report = run_analysis(lm, dataset, split, pooling=pooling, max_length=max_length, seed=seed, output=output,
                              progress=progress)
    return report.align_layer, report.unif_layer
