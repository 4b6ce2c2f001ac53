"""Speed of repeated dev evaluations (what `train qpeft` does after every epoch) with and without the prefix memo.

Training scores the same dev pairs once untrained, once with zero-shot UPR and once per epoch. The hints come
after the passage, so the passage prefix of every pair is the same each time: with a
:class:`pyserini_qpeft.lm.memo.PrefixMemo` only the first evaluation runs it. This script scores the same pairs
``--evaluations`` times with a Q-PEFT-A module (random init, as at step 0) in one process, first without a memo,
then with one, and prints seconds per evaluation, the ratio, and the largest score difference (0.0: the memo only
skips work).

Inputs as in bench_scoring.py: the first --queries queries of a run with their top --depth hits.

Usage:  python benchmarks/bench_dev_memo.py --queries 10 --depth 10 --evaluations 3
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scoring import DEFAULT_RUN, load_inputs  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--evaluations", type=int, default=3, help="dev evaluations to time (>= 2)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default="/work/shared/data/beir/scifact")
    parser.add_argument("--run", default=str(DEFAULT_RUN))
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-passage-tokens", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    args.sample_docs = None
    if args.evaluations < 2:
        parser.error("--evaluations must be >= 2 (the first evaluation fills the memo)")
    return args


def timed_evaluations(scorer, queries, docs, n: int) -> tuple[list[float], list[float]]:
    """Scores of the last evaluation and the seconds of each of ``n`` evaluations."""
    seconds, scores = [], []
    for _ in range(n):
        t = time.perf_counter()
        scores = scorer.score(queries, docs)
        seconds.append(time.perf_counter() - t)
    return scores, seconds


def main(argv=None) -> None:
    args = parse_args(argv)
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
    from pyserini_qpeft.lm.memo import PrefixMemo
    from pyserini_qpeft.lm.scoring import QueryLikelihoodScorer, ScorerConfig
    from pyserini_qpeft.qpeft.config import QPeftConfig
    from pyserini_qpeft.qpeft.module import build_module

    queries, docs, source = load_inputs(args)
    lm = FrozenLM.load(LMConfig(model=args.model, device=args.device, dtype=args.dtype))
    module = build_module(lm, QPeftConfig(variant="attn", seed=0))
    config = ScorerConfig(max_passage_tokens=args.max_passage_tokens)
    plain, plain_s = timed_evaluations(QueryLikelihoodScorer(lm, config, hint_module=module), queries, docs,
                                       args.evaluations)
    memo = PrefixMemo.for_device(lm.device)
    kept, kept_s = timed_evaluations(QueryLikelihoodScorer(lm, config, hint_module=module, prefix_memo=memo),
                                     queries, docs, args.evaluations)
    total_plain, total_kept = sum(plain_s), sum(kept_s)
    report = {"inputs": source, "pairs": len(queries), "evaluations": args.evaluations, "device": str(lm.device),
              "dtype": str(lm.dtype), "seconds_without_memo": [round(s, 2) for s in plain_s],
              "seconds_with_memo": [round(s, 2) for s in kept_s],
              "repeat_speedup": round(plain_s[-1] / kept_s[-1], 2),
              "total_speedup": round(total_plain / total_kept, 2), "memo_bytes": memo.bytes,
              "max_abs_score_diff": max(abs(a - b) for a, b in zip(plain, kept))}
    print(f"{source}: {len(queries)} pairs, {args.evaluations} evaluations, {lm.device} {lm.dtype}")
    print(f"  without memo: {' '.join(f'{s:.1f}s' for s in plain_s)}")
    print(f"  with memo:    {' '.join(f'{s:.1f}s' for s in kept_s)}  (memo {memo.bytes / 2**20:.0f} MiB)")
    print(f"  a repeated evaluation is {report['repeat_speedup']:.2f}x faster; all {args.evaluations} evaluations "
          f"{report['total_speedup']:.2f}x; largest score difference {report['max_abs_score_diff']:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
