"""Overhead of `rerank --engine ray` against the serial `rerank`, same inputs, timed in one run.

Takes the first --queries queries of a first-stage run with their top --depth hits (SciFact test by default),
runs the serial command and the Ray one (a local Ray with this machine's CPUs, a Ray Data pool of --workers actors), checks that the
two runs are byte-identical and prints both wall times and their ratio. Each timing includes what a user waits
for: model loading, Ray start-up, scoring, the merge.

Usage:  python benchmarks/bench_ray.py --queries 10 --depth 20 --workers 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN = ROOT / "runs" / "bm25-flat.beir-scifact-test.trec"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--run", default=str(DEFAULT_RUN))
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args(argv)

    if not Path(args.run).is_file():
        raise SystemExit(f"{args.run}: no first-stage run; make it with `pyserini-qpeft index --dataset scifact` and "
                         "`pyserini-qpeft search --bm25 --index indexes/lucene-beir-scifact-flat --topics "
                         "beir-v1.0.0-scifact-test --output runs/bm25-flat.beir-scifact-test.trec --hits 1000 "
                         "--remove-query` (or pass --run)")
    lines = Path(args.run).read_text().splitlines()
    qids = list(dict.fromkeys(line.split()[0] for line in lines))[:args.queries]
    keep = [line for line in lines if line.split()[0] in set(qids) and int(line.split()[3]) <= args.depth]
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "first.trec").write_text("\n".join(keep) + "\n")
        common = [sys.executable, "-m", "pyserini_qpeft", "rerank", "--run", str(work / "first.trec"), "--topics",
                  f"beir-v1.0.0-{args.dataset}-test", "--corpus", args.dataset, "--reranker", "upr",
                  "--rerank-depth", str(args.depth), "--model", args.model, "--device", "cpu", "--dtype", "fp32",
                  "-q"]
        timings = {}
        for name, extra in (("serial", []), ("ray", ["--engine", "ray", "--workers", str(args.workers)])):
            start = time.time()
            subprocess.run([*common, "--output", str(work / f"{name}.trec"), *extra], check=True,
                           env=dict(os.environ), stdout=subprocess.DEVNULL)
            timings[name] = time.time() - start
        identical = (work / "serial.trec").read_bytes() == (work / "ray.trec").read_bytes()
    pairs = len(keep)
    print(json.dumps({"pairs": pairs, "workers": args.workers, "cpus": os.cpu_count(),
                      "serial_seconds": round(timings["serial"], 1), "ray_seconds": round(timings["ray"], 1),
                      "ray_over_serial": round(timings["ray"] / timings["serial"], 2), "identical": identical}))


if __name__ == "__main__":
    main()
