"""A matrix planned for one dataset and profile: each artifact's command line and path, what is done, and the
record of the command that made each artifact (``.<name>.repro.json``)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import InputError, UsageError
from .matrix import Matrix

REMOTE_CODE_FLAGS = frozenset({"--trust-remote-code", "--reranker-trust-remote-code"})
SAMPLE_SEED = 0  # seed of a profile's test_queries sample (`search --sample-queries N --sample-seed 0`)


def _substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` of ``values`` replaced (other braces are left alone)."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


# Profile variables that only one training command uses, empty unless the profile sets them: one Q-PEFT variant's
# options the other variants refuse (e.g. Q-PEFT-R's --query-proj), and LMORT's tuner and training options added
# after the profile's lmort_budget (so an ablation profile states only the knob it turns).
VARIANT_FLAGS = ("attn_flags", "retr_flags", "prompt_flags", "lmort_flags")


def lmort_state_flags(states: str, dataset: str, train_dataset: str) -> dict[str, str]:
    """The LMORT state-cache flags of a profile's ``lmort_states`` folder prefix ``P`` (empty: none): training
    stores its layer states in ``P.beir-<train dataset>`` and each corpus encoding reads ``P.beir-<its dataset>``."""
    if not states:
        return {"lmort_cache_flags": "", "lmort_encode_flags": "", "lmort_train_encode_flags": ""}
    return {"lmort_cache_flags": f"--cache-dir {states}.beir-{train_dataset}",
            "lmort_encode_flags": f"--state-cache {states}.beir-{dataset}",
            "lmort_train_encode_flags": f"--state-cache {states}.beir-{train_dataset}"}


REPEATABLE_OPTIONS = frozenset({"--run", "--compare-to", "-m", "--metric", "--reranked", "--dense", "--also-rerank",
                                "--condition", "--query-encoder-checkpoint"})
"""Options of the CLI that may be given more than once, each time adding a value (click's ``multiple=True``); a
test checks this list against the CLI."""


def collapse_repeated_options(args: Sequence[str]) -> list[str]:
    """``args`` with each option given more than once with one value each (``--dtype fp32 ... --dtype bf16``)
    written once, at its first place, with its last value: the command click runs, as a user would type it.
    Options of :data:`REPEATABLE_OPTIONS`, flags without a value and ``--flag=value`` words are left as they are."""
    args = list(args)

    def value_at(i: int) -> str | None:  # the one value of the option at i, None when it has none or several
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
            return None
        if i + 2 < len(args) and not args[i + 2].startswith("--"):
            return None
        return args[i + 1]

    places: dict[str, list[int]] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--") and "=" not in arg and arg not in REPEATABLE_OPTIONS:
            places.setdefault(arg, []).append(i)
    drop: set[int] = set()
    for flag, at in places.items():
        if len(at) < 2 or any(value_at(i) is None for i in at):
            continue
        args[at[0] + 1] = args[at[-1] + 1]
        drop.update(j for i in at[1:] for j in (i, i + 1))
    return [arg for i, arg in enumerate(args) if i not in drop]


RECORD_FORMAT = "pyserini_qpeft.repro-record/1"


def record_path(output: str | Path) -> Path:
    """Where repro records the command that made ``output``: ``.<name>.repro.json`` beside it."""
    output = Path(output)
    return output.with_name(f".{output.name}.repro.json")


class Planner:
    """Resolves artifact paths and commands for one dataset and profile."""

    def __init__(self, matrix: Matrix, dataset: str, profile: str = "full", train_dataset: str | None = None,
                 splits: tuple[str, ...] = ("train", "test"), seed_offset: int = 0):
        """``seed_offset`` K trains every trained condition with its base seed + K (the matrix's ``seeds``) into
        checkpoints and runs named with ``.seed+K`` (nothing changes for K = 0)."""
        if profile not in matrix.profiles:
            raise UsageError(f"unknown profile {profile!r}; choose from {', '.join(matrix.profiles)}")
        if seed_offset < 0:
            raise InputError(f"the seed offset must be >= 0, got {seed_offset}")
        self.matrix = matrix
        self.dataset = dataset
        self.splits = splits
        transfer = bool(train_dataset) and train_dataset != dataset
        common = {"dataset": dataset, "train_dataset": train_dataset or dataset,
                  # runs made with another dataset's checkpoint say so in their file name
                  "xfer": f".from-{train_dataset}" if transfer else "",
                  "seed_suffix": f".seed+{seed_offset}" if seed_offset else "",
                  "dtype": matrix.dtype,
                  **{name: "" for name in VARIANT_FLAGS},
                  **{name: str(base + seed_offset) for name, base in matrix.seeds.items()}}
        # profile values may name these variables ({dataset}, {train_dataset}, ...), e.g. in a folder path
        self.variables = {**common, **{k: _substitute(str(v), common) for k, v in matrix.profiles[profile].items()}}
        self.variables.update(lmort_state_flags(self.variables.get("lmort_states", ""), dataset,
                                                self.variables["train_dataset"]))
        # the dtype of trainings and encodings (a profile may rerank in another) and the tags of shared names
        self.variables.setdefault("train_dtype", self.variables["dtype"])
        for name in ("dtype", "train_dtype"):
            value = self.variables[name]
            self.variables[f"{name}_tag"] = "" if value == "fp32" else f"-{value}"
        self.test_queries = self._test_queries(profile)
        # a profile's `test_queries: N` evaluates on N test queries sampled by `search --sample-queries`
        n = self.test_queries
        self.variables["test_sample"] = f".sample{n}" if n else ""
        self.variables["test_sample_flags"] = f"--sample-queries {n} --sample-seed {SAMPLE_SEED}" if n else ""

    def _test_queries(self, profile: str) -> int | None:
        """The profile's ``test_queries`` (a positive integer), None when it evaluates on every test query."""
        value = self.matrix.profiles[profile].get("test_queries")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"profile {profile!r}: test_queries must be a positive integer, got {value!r}")
        return value

    def _fmt(self, template: str) -> str:
        values = dict(self.variables)
        for name, art in self.matrix.artifacts.items():
            if "{" + name + "}" in template:
                values[name] = self.output(name)
        try:
            return template.format(**values)
        except KeyError as exc:
            raise InputError(f"beir.yaml template {template!r} uses unknown variable {exc}") from None

    def output(self, name: str) -> str:
        return self._fmt(self.matrix.artifacts[name].output)

    def run_xfer(self, name: str) -> str:
        """The transfer suffix (``.from-X``) of artifact ``name``'s run, ``""`` when its name has no ``{xfer}``: a
        run that does not depend on the other dataset (BM25, zero-shot UPR) is the same run as without transfer
        and is judged by the same expectation."""
        return self.variables["xfer"] if "{xfer}" in self.matrix.artifacts[name].output else ""

    def command(self, name: str) -> list[str]:
        """Artifact ``name``'s command (arguments without the program name); an option that a profile's flags set
        again (e.g. the budget's ``--lr 1e-3`` and ``retr_flags``' ``--lr 1e-2``) appears once, with the last
        value, as click would read it (:func:`collapse_repeated_options`)."""
        art = self.matrix.artifacts[name]
        args = collapse_repeated_options(
            shlex.split(self._fmt(art.command.replace("{output}", self.matrix.artifacts[name].output))))
        allowing = sorted({a.split("=", 1)[0] for a in args} & REMOTE_CODE_FLAGS)
        if allowing:  # a YAML passed around does not look like code; running a model's code is the user's call
            from ..lm.backbone import TRUST_REMOTE_CODE_ENV

            raise UsageError(f"artifact {name!r} of the repro matrix allows model code to run "
                             f"({', '.join(allowing)}): a matrix may not; to run such a model, set "
                             f"{TRUST_REMOTE_CODE_ENV}=1 yourself")
        return args

    def is_done(self, name: str) -> bool:
        """Whether artifact ``name`` exists; InputError when its record names another command than this plan's."""
        return self.status(name) is not None

    def status(self, name: str) -> bool | None:
        """None when artifact ``name`` does not exist, else :meth:`recorded`'s answer (InputError: made by
        another command)."""
        art = self.matrix.artifacts[name]
        out = Path(self.output(name))
        if not ((out / art.done).exists() if art.done else out.exists()):
            return None
        return self.recorded(name)

    def recorded(self, name: str) -> bool:
        """True when the existing artifact ``name`` has a record of this plan's command, False when it has none
        (made outside repro, or before records existed); InputError when it was made by another command."""
        out = self.output(name)
        path = record_path(out)
        try:
            found = json.loads(path.read_text(encoding="utf-8"))["command"]
        except FileNotFoundError:
            return False
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
            found = None
        planned = self.command(name)
        if found != planned:
            made = f"`pyserini-qpeft {shlex.join(found)}`" if isinstance(found, list) else "an unreadable record"
            raise InputError(f"{out} was made by another command ({made}; record {path}), not this plan's "
                             f"`pyserini-qpeft {shlex.join(planned)}`: move or delete it (and its record) to make "
                             f"it with this plan", out)
        return True

    def record(self, name: str) -> None:
        """Write the record of artifact ``name``: this plan's command made it."""
        from ..artifacts import write_json

        write_json(record_path(self.output(name)), {"format": RECORD_FORMAT, "command": self.command(name)})

    def available(self, name: str) -> bool:
        """False when the artifact (or a dependency) needs a split this dataset lacks."""
        art = self.matrix.artifacts[name]
        if art.requires_split and art.requires_split not in self.splits:
            return False
        return all(self.available(need) for need in art.needs)

    def order(self, names: list[str]) -> list[str]:
        """Artifacts needed for ``names``, dependencies first, each once."""
        seen: list[str] = []

        def visit(name: str) -> None:
            for need in self.matrix.artifacts[name].needs:
                visit(need)
            if name not in seen:
                seen.append(name)

        for name in names:
            visit(name)
        return seen
