"""The main job, end to end on a small default: ``python -m pyserini_qpeft.demo`` (``make demo``).

Index SciFact, BM25 (train + test), zero-shot UPR, train Q-PEFT on a small budget (or reuse it), rerank,
interpolate each reranker with BM25 at a weight selected on dev queries carved from the training split, evaluate,
print the comparison table. It is ``pyserini-qpeft repro beir --profile P`` on five conditions, so every step is a
printed, re-runnable command and finished steps are reused.

Which profile (``--profile auto``, the default) depends on the CPU. ``--dtype auto``'s matmul probe
(:mod:`pyserini_qpeft.lm.precision`) says whether bf16 is fast (AMX Xeons, avx512_bf16 EPYCs); where it is, the
recorded recipe (``demo-bf16``: 256-token passages, 200 training queries) is the candidate, elsewhere only a
cut-down one (``demo``: fp32, 64-token passages, 64 training queries). Both train Q-PEFT-R with the same recipe
(docs/results.md, "The main job"). A fast-bf16 CPU is not always a fast CPU: the same bf16 demo took 13 min on one
2-core EPYC and 24 min on another. So before choosing, the demo times the LM itself on a few seconds of scoring
(:func:`pyserini_qpeft.lm.throughput.scoring_rate`), estimates each candidate's time from that rate
(:data:`DEMO_WORK`) and takes the first that fits :data:`DEMO_MINUTES`; when none does, the quicker one, with a
warning. A profile whose training already finished in this folder is kept (a second ``make demo`` only prints).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

DEMO_RERANKER, DEMO_RERANKER_LABEL = "qpeft-retr", "Q-PEFT-R"
"""The trained reranker the demo shows next to BM25 and zero-shot UPR (either profile), and its name in print."""
DEMO_PROFILES = {
    "demo-bf16": "",
    "demo": "what fits 20 minutes on 2 cores without fast bf16 (or with an LM too slow for demo-bf16), a budget at "
            "which the trained row at best tied BM25 in every recorded run (+0.004, interpolated)",
}
"""The demo's beir.yaml profiles, each with what :func:`describe` cannot read from its commands (the recorded tables:
docs/results.md, "The main job")."""
DEMO_CONDITIONS = {profile: ("bm25", "bm25+upr", "bm25+upr+interp", f"bm25+{DEMO_RERANKER}",
                             f"bm25+{DEMO_RERANKER}+interp") for profile in DEMO_PROFILES}


def _planner(profile: str, dataset: str):
    """The `repro beir` planner of the demo's ``profile`` (the commands it issues, what is done)."""
    from .repro.matrix import Matrix
    from .repro.plan import Planner

    return Planner(Matrix.load(), dataset, profile=profile)


def _footing_of(train: list[str]) -> tuple[str, int]:
    """``(dtype, passage tokens)`` of a training command."""
    from .repro.execute import option_value

    return str(option_value(train, "--dtype")), int(option_value(train, "--max-passage-tokens") or 0)


def footing(profile: str, dataset: str = "scifact") -> tuple[str, int]:
    """``(dtype, passage tokens)`` the profile's training and reranks run at (read from its training command)."""
    return _footing_of(_planner(profile, dataset).command(f"ckpt-{DEMO_RERANKER}"))


def describe(profile: str, dataset: str = "scifact") -> str:
    """What the demo's ``profile`` runs, read from the training and search commands `repro beir` issues for it, e.g.
    ``fp32, 64-token passages, Q-PEFT-R trained for 1 epoch on 64 queries, 50 sampled test queries``, followed by
    the profile's note in :data:`DEMO_PROFILES`."""
    from .repro.execute import option_value

    planner = _planner(profile, dataset)
    train = planner.command(f"ckpt-{DEMO_RERANKER}")
    epochs = option_value(train, "--epochs")
    dtype, tokens = _footing_of(train)
    text = (f"{dtype}, {tokens}-token passages, "
            f"{DEMO_RERANKER_LABEL} trained for {epochs} epoch{'' if epochs == '1' else 's'} on "
            f"{option_value(train, '--max-train-queries')} queries, "
            + (f"{planner.test_queries} sampled test queries" if planner.test_queries else "every test query"))
    return f"{text}: {DEMO_PROFILES[profile]}" if DEMO_PROFILES[profile] else text


BUDGET_MINUTES, INSTALL_MINUTES = 20.0, 3.0
DEMO_MINUTES = BUDGET_MINUTES - INSTALL_MINUTES
"""What the demo itself may take: `make demo` has 20 minutes on 2 cores, install included (a fresh venv's install
took 1.5-1.9 min on the calibration EPYC, 2.8 min once elsewhere with pip's cache cold)."""


@dataclass(frozen=True)
class DemoWork:
    """A demo profile's cost: its LM work as a number of fresh-prefix pairs at the profile's dtype and passage
    length (what :func:`~pyserini_qpeft.lm.throughput.scoring_rate` times), plus the seconds that do not scale with
    the LM (index, BM25, evaluation, process starts)."""

    pairs: float
    fixed_seconds: float

    def minutes(self, rate: float) -> float:
        """Estimated minutes at ``rate`` fresh-prefix pairs per second."""
        return (self.fixed_seconds + self.pairs / rate) / 60.0


DEMO_WORK = {"demo-bf16": DemoWork(pairs=5000, fixed_seconds=60), "demo": DemoWork(pairs=2600, fixed_seconds=60)}
"""Calibrated on one machine (a 2-core AMD EPYC with avx512_bf16, 2026-12-06; docs/results.md, "The main job"):
``pairs`` = (the profile's measured time there - ~60 s of index, BM25 and evaluation) x that machine's
:func:`~pyserini_qpeft.lm.throughput.scoring_rate` at the profile's footing: demo-bf16 (1,464 s - 60 s) x 3.56
pairs/s (bf16, 256 tokens), demo (464 s - 60 s) x 6.34 pairs/s (fp32, 64 tokens). The estimate assumes the rest
scales with the LM's speed, as it does where the LM is the cost; demo-bf16 is chosen from 5.2 pairs/s up."""


@dataclass(frozen=True)
class ProfileChoice:
    """The demo's profile and why: ``estimates`` (profile -> minutes, the candidates timed, in order),
    ``rates`` (profile -> fresh-prefix pairs/s at its footing), ``reused`` (its training had already finished)."""

    profile: str
    estimates: dict[str, float]
    rates: dict[str, float]
    reused: bool = False

    @property
    def over_budget(self) -> bool:
        return not self.reused and self.estimates.get(self.profile, 0.0) > DEMO_MINUTES

    def describe(self) -> str:
        if self.reused:
            return f"reusing profile {self.profile}: its training already finished in this folder"
        parts = []
        for name, minutes in self.estimates.items():
            dtype, tokens = footing(name)
            parts.append(f"{name} ~{minutes:.0f} min (the LM scores {self.rates[name]:.1f} pairs/s here in {dtype}, "
                         f"{tokens}-token passages)")
        text = f"estimated: {'; '.join(parts)}; the demo may take {DEMO_MINUTES:.0f} min"
        return f"{text} -> profile {self.profile}" + (" (none fits: the quickest; expect it to run over)"
                                                      if self.over_budget else "")


def choose_profile(fast_bf16: bool, rate: Callable[[str, int], float],
                   finished: Callable[[str], bool] = lambda profile: False,
                   minutes: float = DEMO_MINUTES) -> ProfileChoice:
    """The demo's profile: the candidates are ``demo-bf16`` then ``demo`` on a CPU where bf16 is fast, ``demo``
    elsewhere; a candidate whose training already ``finished`` is kept; else the first whose estimate at
    ``rate(dtype, passage_tokens)`` (fresh-prefix pairs/s) fits ``minutes``, or the quickest when none does."""
    candidates = ["demo-bf16", "demo"] if fast_bf16 else ["demo"]
    for name in candidates:
        if finished(name):
            return ProfileChoice(name, {}, {}, reused=True)
    estimates: dict[str, float] = {}
    rates: dict[str, float] = {}
    for name in candidates:
        rates[name] = rate(*footing(name))
        estimates[name] = DEMO_WORK[name].minutes(rates[name])
        if estimates[name] <= minutes:
            return ProfileChoice(name, estimates, rates)
    return ProfileChoice(min(estimates, key=estimates.__getitem__), estimates, rates)


def measure_rate(dtype: str, passage_tokens: int) -> float:
    """This machine's fresh-prefix pairs/s for the packaged LM (on the device the demo will use) at ``dtype`` and
    ``passage_tokens``."""
    from .lm.backbone import FrozenLM, LMConfig
    from .lm.throughput import scoring_rate

    return scoring_rate(FrozenLM.load(LMConfig(dtype=dtype)), passage_tokens)


def training_finished(profile: str, dataset: str = "scifact") -> bool:
    """Whether the profile's trained checkpoint exists in this folder (what a second ``make demo`` reuses)."""
    return _planner(profile, dataset).is_done(f"ckpt-{DEMO_RERANKER}")


def main(argv: list[str] | None = None) -> None:
    import argparse

    from .cli.main import cli

    parser = argparse.ArgumentParser(prog="python -m pyserini_qpeft.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--profile", default="auto", choices=["auto", *DEMO_CONDITIONS],
                        help=f"auto: demo-bf16 where the CPU runs bf16 fast and the LM's measured speed says it fits "
                             f"{DEMO_MINUTES:.0f} minutes, else demo")
    args = parser.parse_args(argv)
    start = time.time()
    profile = args.profile
    if profile == "auto":
        from .lm.precision import auto_cpu_dtype

        precision = auto_cpu_dtype()
        print(f"# {precision.describe()}", flush=True)
        choice = choose_profile(precision.dtype == "bf16", measure_rate,
                                finished=lambda name: training_finished(name, args.dataset))
        profile = choice.profile
        print(f"# {choice.describe()}", flush=True)
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
