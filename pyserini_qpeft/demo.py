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

DEMO_RERANKER, DEMO_RERANKER_LABEL = "qpeft-retr", "Q-PEFT-R"
"""The trained reranker the demo shows next to BM25 and zero-shot UPR (either profile), and its name in print."""
DEMO_PROFILES = {
    "demo-bf16": "",
    "demo": "what fits 20 minutes on 2 cores without fast bf16, a budget at which no recorded run of the trained row "
            "beat BM25",
}
"""The demo's beir.yaml profiles, each with what :func:`describe` cannot read from its commands (the recorded tables:
docs/results.md, "The main job")."""
DEMO_CONDITIONS = {profile: ("bm25", "bm25+upr", "bm25+upr+interp", f"bm25+{DEMO_RERANKER}",
                             f"bm25+{DEMO_RERANKER}+interp") for profile in DEMO_PROFILES}


def describe(profile: str, dataset: str = "scifact") -> str:
    """What the demo's ``profile`` runs, read from the training and search commands `repro beir` issues for it, e.g.
    ``fp32, 64-token passages, Q-PEFT-R trained for 1 epoch on 64 queries, 50 sampled test queries``, followed by
    the profile's note in :data:`DEMO_PROFILES`."""
    from .repro.runner import Matrix, Planner, option_value

    planner = Planner(Matrix.load(), dataset, profile=profile)
    train = planner.command(f"ckpt-{DEMO_RERANKER}")
    epochs = option_value(train, "--epochs")
    text = (f"{option_value(train, '--dtype')}, {option_value(train, '--max-passage-tokens')}-token passages, "
            f"{DEMO_RERANKER_LABEL} trained for {epochs} epoch{'' if epochs == '1' else 's'} on "
            f"{option_value(train, '--max-train-queries')} queries, "
            + (f"{planner.test_queries} sampled test queries" if planner.test_queries else "every test query"))
    return f"{text}: {DEMO_PROFILES[profile]}" if DEMO_PROFILES[profile] else text


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
    print(f"# profile {profile}: {describe(profile, args.dataset)} "
          f"(recorded tables: docs/results.md, \"The main job\")", flush=True)
    cmd = ["repro", "beir", "--dataset", args.dataset, "--profile", profile, "--download"]
    for name in DEMO_CONDITIONS[profile]:
        cmd += ["--condition", name]
    print("pyserini-qpeft " + " ".join(cmd), flush=True)
    code = cli.main(args=cmd, prog_name="pyserini-qpeft", standalone_mode=False)
    print(f"# demo finished in {(time.time() - start) / 60:.1f} min", flush=True)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
