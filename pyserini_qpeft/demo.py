"""The main job, end to end on a small default: ``python -m pyserini_qpeft.demo`` (``make demo``).

Index SciFact, BM25 (train + test), zero-shot UPR, train Q-PEFT on a small budget (or reuse it), rerank,
interpolate each reranker with BM25 at a weight selected on dev queries carved from the training split, evaluate,
print the comparison table. It is ``pyserini-qpeft repro beir --profile P`` on five conditions, so every step is a
printed, re-runnable command and finished steps are reused.

Which profile (``--profile auto``, the default) depends on the CPU, decided by ``--dtype auto``'s matmul probe
(:mod:`pyserini_qpeft.lm.precision`): where bf16 is fast (AMX Xeons, avx512_bf16 EPYCs) the recorded recipe fits
20 minutes on 2 cores (``demo-bf16``: 256-token passages, 200 training queries); elsewhere only a cut-down one
does (``demo``: fp32, 64-token passages, 64 training queries). Both train Q-PEFT-R with the same recipe
(docs/results.md, "The main job").
"""
from __future__ import annotations

import sys
import time

DEMO_PROFILES = {
    "demo-bf16": "bf16, 256-token passages, Q-PEFT-R trained for 1 epoch on 200 queries, 100 sampled test queries",
    "demo": "fp32, 64-token passages, Q-PEFT-R trained for 1 epoch on 64 queries, 50 sampled test queries: what fits "
            "20 minutes on 2 cores without fast bf16, a budget at which no recorded run of the trained row beat BM25",
}
"""The demo's beir.yaml profiles and what each runs, printed before it starts (the recorded tables: docs/results.md,
"The main job")."""
DEMO_RERANKER = "qpeft-retr"
"""The trained reranker the demo shows next to BM25 and zero-shot UPR (either profile)."""
DEMO_CONDITIONS = {profile: ("bm25", "bm25+upr", "bm25+upr+interp", f"bm25+{DEMO_RERANKER}",
                             f"bm25+{DEMO_RERANKER}+interp") for profile in DEMO_PROFILES}


def choose_profile(dtype: str) -> str:
    """``demo-bf16`` when the CPU probe picks bf16, else ``demo``."""
    return "demo-bf16" if dtype == "bf16" else "demo"


def main(argv: list[str] | None = None) -> None:
    import argparse

    from .cli.main import cli

    parser = argparse.ArgumentParser(prog="python -m pyserini_qpeft.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--profile", default="auto", choices=["auto", *DEMO_CONDITIONS],
                        help="auto: demo-bf16 where the CPU runs bf16 fast, else demo")
    args = parser.parse_args(argv)
    start = time.time()
    profile = args.profile
    if profile == "auto":
        from .lm.precision import auto_cpu_dtype

        choice = auto_cpu_dtype()
        profile = choose_profile(choice.dtype)
        print(f"# {choice.describe()} -> profile {profile}", flush=True)
    print(f"# profile {profile}: {DEMO_PROFILES[profile]} (recorded tables: docs/results.md, \"The main job\")",
          flush=True)
    cmd = ["repro", "beir", "--dataset", args.dataset, "--profile", profile, "--download"]
    for name in DEMO_CONDITIONS[profile]:
        cmd += ["--condition", name]
    print("pyserini-qpeft " + " ".join(cmd), flush=True)
    code = cli.main(args=cmd, prog_name="pyserini-qpeft", standalone_mode=False)
    print(f"# demo finished in {(time.time() - start) / 60:.1f} min", flush=True)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
