"""Memory of `rerank --corpus` on a big corpus file: the whole corpus in memory vs only the run's documents.

A synthetic Pyserini JSONL corpus (``--docs`` passages of ``--words`` words, MS MARCO-like) is written to a temporary
folder; a rerank of ``--queries`` queries at ``--depth`` reads ``queries x depth`` of its documents. Each way of
opening it runs in its own child process (so one does not inherit the other's heap) and reports its peak resident
memory (``ru_maxrss``) and time; the ratio is printed against the whole-corpus baseline measured in the same run.

Usage:  python benchmarks/bench_docstore_memory.py [--docs 1000000] [--words 60] [--queries 43] [--depth 100]
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pyserini_qpeft.rerank.pipeline import open_docstore
corpus, needed = sys.argv[1], sys.argv[2]
keep = set(json.loads(open(needed).read())) if needed != "-" else None
start = time.time()
docs = open_docstore(corpus=corpus, needed=keep)
print(json.dumps({"documents": len(docs), "seconds": round(time.time() - start, 1),
                  "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--words", type=int, default=60, help="words per passage (MS MARCO's mean is ~56)")
    parser.add_argument("--queries", type=int, default=43, help="43 = TREC DL 2019's judged queries")
    parser.add_argument("--depth", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30_000)]
    with tempfile.TemporaryDirectory(prefix="bench-docstore-") as work:
        corpus, needed = Path(work) / "corpus.jsonl", Path(work) / "needed.json"
        with open(corpus, "w") as out:
            for i in range(args.docs):
                out.write(json.dumps({"id": str(i), "contents": " ".join(rng.choices(vocab, k=args.words))}) + "\n")
        keep = rng.sample(range(args.docs), min(args.docs, args.queries * args.depth))
        needed.write_text(json.dumps([str(i) for i in keep]))
        print(f"corpus: {args.docs:,} passages, {corpus.stat().st_size / 2**20:,.0f} MiB; the run reads "
              f"{len(keep):,} of them ({args.queries} queries x top {args.depth})")
        results = {}
        for label, arg in (("whole corpus (before)", "-"), ("run's documents only", str(needed))):
            proc = subprocess.run([sys.executable, "-c", CHILD, str(corpus), arg], capture_output=True, text=True,
                                  check=True)
            results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        base = results["whole corpus (before)"]
        for label, r in results.items():
            print(f"{label:<24} {r['documents']:>10,} documents held  peak {r['peak_mb']:>6,} MB  "
                  f"({r['peak_mb'] / base['peak_mb']:.2f}x)  {r['seconds']:>5.1f} s")


if __name__ == "__main__":
    main()
