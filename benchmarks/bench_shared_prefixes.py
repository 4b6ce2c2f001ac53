"""Several rerankers of one run: one pass with shared document prefixes (``rerank --also-rerank``) vs one rerank
each, same inputs, one process, the same loaded LM.

alone:    ``LMReranker.rerank`` per reranker (each runs every document's prefix forward itself).
together: :func:`pyserini_qpeft.rerank.lm.rerank_together` (each document group's prefix forward once, then every
          reranker's suffix batches on that cache).

Both must give bit-identical scores (checked; the benchmark fails otherwise). Times are wall-clock seconds of the
reranking calls only (model and checkpoint loading excluded); the ratio is alone / together, measured in the same
run. Rerankers: ``--reranker upr`` (default; or a trained one, ``--reranker NAME=PATH``) plus ``--checkpoint
NAME=PATH`` for trained ones (e.g. a reranker's training seeds, for a seed ensemble: ``fuse --method
rerank-interpolation`` with several reranks).

Usage:  python benchmarks/bench_shared_prefixes.py --run runs/bm25-flat.beir-scifact-train-dev40.trec \\
          --topics beir-v1.0.0-scifact-train --corpus scifact --depth 20 --max-passage-tokens 256 --dtype bf16 \\
          --checkpoint qpeft-retr=checkpoints/qpeft-retr.beir-scifact-demo-bf16/best
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="first-stage TREC run")
    parser.add_argument("--topics", required=True, help="topics name or file (as `rerank --topics`)")
    parser.add_argument("--corpus", required=True, help="corpus / BEIR dataset name (as `rerank --corpus`)")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--queries", type=int, default=None, help="only the run's first N queries")
    parser.add_argument("--reranker", default="upr", help="the first reranker: NAME, or NAME=PATH (trained)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="a trained reranker and its checkpoint (repeatable)")
    parser.add_argument("--max-passage-tokens", type=int, default=None)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from pyserini_qpeft.data import load_topics
    from pyserini_qpeft.rerank.lm import rerank_together
    from pyserini_qpeft.rerank.pipeline import make_reranker, open_docstore
    from pyserini_qpeft.types import Run, read_run

    run = read_run(args.run)
    if args.queries:
        run = Run({q: run[q] for q in run.qids()[:args.queries]}, tag=run.tag)
    queries, docs = load_topics(args.topics), open_docstore(corpus=args.corpus)
    name, _, path = args.reranker.partition("=")
    first = make_reranker(name, path or None, args.model, args.device, args.dtype, args.max_passage_tokens)
    rerankers = [first] + [make_reranker(spec.split("=", 1)[0], spec.split("=", 1)[1], args.model, args.device,
                                         args.dtype, args.max_passage_tokens, lm=first.lm)
                           for spec in args.checkpoint]
    pairs = sum(min(len(run[q]), args.depth) for q in run.qids())
    rerankers[0].rerank(queries, Run({q: run[q][:2] for q in run.qids()[:2]}), docs, depth=2, progress=False)  # warm-up
    counts = Counter(r.name for r in rerankers)
    names = [r.name if counts[r.name] == 1 else f"{r.name}#{k}"
             for k, r in enumerate(rerankers)]  # e.g. three seeds of one reranker: qpeft-retr#0, #1, #2
    alone, seconds = [], {}
    for name, reranker in zip(names, rerankers):
        t = time.perf_counter()
        alone.append(reranker.rerank(queries, run, docs, depth=args.depth, progress=False))
        seconds[name] = time.perf_counter() - t
    t = time.perf_counter()
    together = rerank_together(rerankers, queries, run, docs, depth=args.depth, progress=False)
    t_together = time.perf_counter() - t
    for name, a, b in zip(names, alone, together):
        same = all([(h.docid, h.score) for h in a[q]] == [(h.docid, h.score) for h in b[q]] for q in run.qids())
        if not same:
            raise SystemExit(f"{name}: scores differ between alone and together")
    t_alone = sum(seconds.values())
    report = {"run": args.run, "queries": len(run.qids()), "depth": args.depth, "pairs_per_reranker": pairs,
              "model": first.lm.model_id, "dtype": str(first.lm.dtype), "config": first.config.to_dict(),
              "rerankers": names, "checkpoints": [path or None, *(spec.split("=", 1)[1] for spec in args.checkpoint)],
              "alone_seconds": seconds, "alone_total_seconds": t_alone,
              "together_seconds": t_together, "speedup": t_alone / t_together, "identical_scores": True}
    for name, value in seconds.items():
        print(f"alone     {name:<14} {value:8.1f} s  ({pairs / value:5.1f} pairs/s)")
    print(f"alone     {'total':<14} {t_alone:8.1f} s")
    print(f"together  {'+'.join(report['rerankers']):<14} {t_together:8.1f} s  -> {t_alone / t_together:.2f}x "
          f"(scores bit-identical)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
