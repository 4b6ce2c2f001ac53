"""The main job, end to end on a small default: ``python -m pyserini_qpeft.demo`` (``make demo``).

Index SciFact, BM25 (train + test), zero-shot UPR, train Q-PEFT-A on a small budget (or reuse it), rerank,
interpolate each reranker with BM25 at a weight selected on dev queries carved from the training split, evaluate,
print the comparison table. It is ``pyserini-qpeft repro beir --profile demo`` on five conditions, so every step
is a printed, re-runnable command and finished steps are reused.
"""
from __future__ import annotations

import sys
import time

DEMO_CONDITIONS = ("bm25", "bm25+upr", "bm25+upr+interp", "bm25+qpeft-attn", "bm25+qpeft-attn+interp")


def main(argv: list[str] | None = None) -> None:
    import argparse

    from .cli.main import cli

    parser = argparse.ArgumentParser(prog="python -m pyserini_qpeft.demo", description=__doc__)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--profile", default="demo")
    args = parser.parse_args(argv)
    start = time.time()
    cmd = ["repro", "beir", "--dataset", args.dataset, "--profile", args.profile, "--download"]
    for name in DEMO_CONDITIONS:
        cmd += ["--condition", name]
    print("pyserini-qpeft " + " ".join(cmd), flush=True)
    code = cli.main(args=cmd, prog_name="pyserini-qpeft", standalone_mode=False)
    print(f"# demo finished in {(time.time() - start) / 60:.1f} min", flush=True)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
