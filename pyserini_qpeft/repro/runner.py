"""Turn ``beir.yaml`` into CLI commands, run the missing ones (through a caller-given runner), evaluate and check.

An *artifact* is a file or folder made by one ``pyserini-qpeft`` command (index, run, checkpoint); a
*condition* names the artifact holding its final test run plus expected scores per dataset. Everything is
reused when present, so re-running is cheap and an interrupted matrix resumes. Each artifact repro makes gets a
record of its command beside it (``.<name>.repro.json``): an artifact at the path that another command made (another
profile's, an edited recipe's, one typed by hand from the README) is refused rather than reported as this
recipe's row; one without a record (made outside repro) is reused with a warning.
"""
from __future__ import annotations

import json
import logging
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import CheckFailed, InputError, UsageError
from ..rerank.flags import ALSO_RERANK_EXCLUDES

logger = logging.getLogger(__name__)

DEFAULT_YAML = Path(__file__).with_name("beir.yaml")
SAMPLE_SEED = 0  # seed of a profile's test_queries sample (`search --sample-queries N --sample-seed 0`)


@dataclass(frozen=True)
class Artifact:
    name: str
    output: str
    command: str
    needs: tuple[str, ...] = ()
    requires_split: str | None = None
    done: str | None = None  # a path (relative to output) whose existence means the artifact is complete


@dataclass(frozen=True)
class Condition:
    name: str
    run: str
    first_stage: str
    reranker: str
    checkpoint: str | None = None
    trained: bool = False
    expected: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    compare_to: tuple[str, ...] = ()  # conditions the report also tests this one against (besides the baseline)


@dataclass
class Matrix:
    artifacts: dict[str, Artifact]
    conditions: dict[str, Condition]
    profiles: dict[str, dict[str, str]]
    metrics: tuple[str, ...]
    seeds: dict[str, int] = field(default_factory=dict)  # base training seeds ({qpeft_seed}, {lmort_seed})
    dtype: str = "auto"  # {dtype}: the --dtype of every command that runs a model (a profile may set its own)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_YAML) -> "Matrix":
        data = _load_yaml_strict(path)
        artifacts = _resolve_artifacts(data["artifacts"], str(path))
        conditions = {name: Condition(name=name, run=c["run"], first_stage=c["first_stage"], reranker=c["reranker"],
                                      checkpoint=c.get("checkpoint"), trained=bool(c.get("trained", False)),
                                      expected=c.get("expected", {}) or {},
                                      compare_to=_names(c.get("compare_to")))
                      for name, c in data["conditions"].items()}
        for cond in conditions.values():
            if cond.run not in artifacts:
                raise InputError(f"condition {cond.name!r} names unknown artifact {cond.run!r}", str(path))
            for other in cond.compare_to:
                if other not in conditions or other == cond.name:
                    raise InputError(f"condition {cond.name!r} compares to unknown condition {other!r}", str(path))
        for art in artifacts.values():
            for need in art.needs:
                if need not in artifacts:
                    raise InputError(f"artifact {art.name!r} needs unknown artifact {need!r}", str(path))
        seeds = data.get("seeds", {}) or {}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds.values()):
            raise InputError(f"seeds must map names to integers, got {seeds!r}", str(path))
        from ..lm.backbone import DTYPES

        dtype = data.get("dtype", "auto")
        if dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", str(path))
        profiles = _resolve_profiles(data.get("profiles", {"full": {}}) or {}, str(path))
        return cls(artifacts, conditions, profiles, tuple(data["metrics"]), dict(seeds), dtype)


def _names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """A YAML list of names, or one name alone (``compare_to: bm25+upr``), as a tuple."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _resolve_artifacts(raw: Mapping[str, Mapping[str, Any]], path: str) -> dict[str, Artifact]:
    """Artifacts with ``base: OTHER`` resolved (:func:`_resolve_bases`): OTHER's command, needs, done and
    requires_split, the artifact's own keys on top (its ``output`` is required: two artifacts never share a path),
    then its ``options`` (``{--flag: value}``) set in the command (:func:`_set_options`). So another training of one
    recipe (e.g. on another seed) states only what differs and cannot drift from the first."""
    def finish(name: str, own: dict[str, Any], inherited: dict[str, Any] | None) -> dict[str, Any]:
        options = own.pop("options", None) or {}
        if inherited is None and options:
            raise InputError(f"artifact {name!r} sets options without a base command", path)
        if inherited is not None and "output" not in own:
            raise InputError(f"artifact {name!r} must name its own output (its base has one)", path)
        merged = {**(inherited or {}), **own}
        command = " ".join(str(merged.get("command", "")).split())
        if not command or "output" not in merged:
            raise InputError(f"artifact {name!r} needs an output and a command", path)
        return {**merged, "command": _set_options(command, options, f"artifact {name!r}", path)}

    return {name: Artifact(name=name, output=a["output"], command=a["command"], needs=tuple(a.get("needs", ())),
                           requires_split=a.get("requires_split"), done=a.get("done"))
            for name, a in _resolve_bases(raw, "artifact", path, finish).items()}


def _set_options(command: str, options: Mapping[str, Any], where: str, path: str) -> str:
    """``command`` (a template, one space between words) with each ``--flag: value`` of ``options`` set: replaced in
    place when the flag is there once, else inserted after the previous option of ``options`` (first: at the end)."""
    words = command.split(" ")
    insert_at = len(words)
    for flag, value in options.items():
        value = str(value)
        if not str(flag).startswith("--") or not value or value.split() != [value]:
            raise InputError(f"{where}: options must map --flags to one word each, got {flag!r}: {value!r}", path)
        if words.count(flag) > 1:
            raise InputError(f"{where}: {flag} appears more than once in the base command", path)
        if flag in words:
            at = words.index(flag) + 1
            if at == len(words) or words[at].startswith("--"):
                raise InputError(f"{where}: {flag} has no value in the base command", path)
            words[at] = value
            insert_at = at + 1
        else:
            words[insert_at:insert_at] = [flag, value]
            insert_at += 2
    return " ".join(words)


def _resolve_profiles(raw: Mapping[str, Mapping[str, Any]], path: str) -> dict[str, dict[str, Any]]:
    """Profiles with ``base: OTHER`` resolved (:func:`_resolve_bases`), so that a profile states only what it
    changes."""
    return _resolve_bases(raw, "profile", path)


Finish = Callable[[str, dict[str, Any], dict[str, Any] | None], dict[str, Any]]


def _resolve_bases(raw: Mapping[str, Mapping[str, Any]], what: str, path: str, finish: Finish | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Entries with ``base: OTHER`` resolved: OTHER's (resolved) values, then the entry's own on top, or what
    ``finish(name, own values, OTHER's resolved values or None)`` makes of them. An unknown base or a cycle is
    refused."""
    resolved: dict[str, dict[str, Any]] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in resolved:
            return resolved[name]
        if name in chain:
            raise InputError(f"{what} base cycle: {' -> '.join(chain + (name,))}", path)
        own = dict(raw[name] or {})
        base = own.pop("base", None)
        if base is not None and base not in raw:
            raise InputError(f"{what} {name!r} has unknown base {base!r}", path)
        inherited = resolve(base, chain + (name,)) if base is not None else None
        resolved[name] = finish(name, own, inherited) if finish else {**(inherited or {}), **own}
        return resolved[name]

    for name in raw:
        resolve(name, ())
    return resolved


def _load_yaml_strict(path: str | Path) -> dict:
    """``yaml.safe_load`` that refuses a mapping with a repeated key (plain YAML keeps the last one silently, which
    would drop expected scores without a word)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise InputError(f"repeated key {key!r} (line {key_node.start_mark.line + 1})", str(path))
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=StrictLoader)


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
                                "--condition"})
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
        return collapse_repeated_options(
            shlex.split(self._fmt(art.command.replace("{output}", self.matrix.artifacts[name].output))))

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
        from ..artifacts import atomic_write, dump_json

        with atomic_write(record_path(self.output(name))) as out:
            out.write(dump_json({"format": RECORD_FORMAT, "command": self.command(name)}))

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


SELF_CHECKING = ("index",)
"""Commands that check an existing output against their own inputs and reuse it in seconds (``index``: an index of
the same corpus is reused, another corpus refused): run even when their artifact exists without a record."""


CommandRunner = Callable[[list[str]], None]
"""Runs one ``pyserini-qpeft`` command (its arguments, without the program name) and raises when it fails. The CLI
passes one that invokes its click group in this process; tests pass a recorder."""


def execute(planner: Planner, conditions: list[Condition], runner: CommandRunner, dry_run: bool = False,
            echo: Callable[[str], None] = print, share_prefixes: bool = True) -> dict[str, float]:
    """Make every missing artifact the conditions need with ``runner``; returns seconds spent per artifact run now.

    ``share_prefixes``: reranks of the same candidates with the same options (e.g. zero-shot UPR and a Q-PEFT
    checkpoint on BM25's test top-20) run as one ``rerank ... --also-rerank`` command (:func:`rerank_partners`),
    which computes each document's prefix once for all of them; the later reranks' other needs (e.g. a training)
    run first. Every run is byte-identical to its own rerank, so only the order of the commands and the time change.
    """
    wanted = [c.run for c in conditions if planner.available(c.run)]
    order = planner.order(wanted)
    timings: dict[str, float] = {}
    made: set[str] = set()
    outputs: set[str] = set()  # two artifacts may be one file (a dataset's index for test and for training)

    def make(name: str, cmd: list[str], label: str, partners: Sequence[str] = ()) -> None:
        outputs.add(planner.output(name))
        echo(f"pyserini-qpeft {shlex.join(cmd)}")
        if dry_run:
            return
        start = time.time()
        runner(cmd)
        timings[name] = time.time() - start
        for made_now in (name, *partners):  # a shared pass's runs are each its own rerank's, byte for byte
            planner.record(made_now)
        echo(f"# [{label}] done in {timings[name]:.0f}s")

    for name in order:
        if name in made or planner.output(name) in outputs:
            continue
        recorded = planner.status(name)
        if recorded is not None:
            if not recorded and planner.command(name)[0] in SELF_CHECKING:
                make(name, planner.command(name), name)  # it checks what is there and reuses it, or refuses it
                made.add(name)
                continue
            unrecorded = "" if recorded else (
                " (made outside repro: no record of its command; reused as is, delete it to make it with "
                "this plan's command)")
            echo(f"# [{name}] exists: {planner.output(name)}{unrecorded}")
            continue
        partners = rerank_partners(planner, name, [n for n in order if n not in made]) if share_prefixes else []
        for need in planner.order(partners):  # the partners' own needs first (never `name`: see rerank_partners)
            if (need not in partners and need not in made and not planner.is_done(need)
                    and planner.output(need) not in outputs):
                make(need, planner.command(need), need)
                made.add(need)
        cmd = planner.command(name)
        for partner in partners:
            other = planner.command(partner)
            checkpoint = option_value(other, "--reranker-checkpoint") or "-"
            cmd += ["--also-rerank", option_value(other, "--reranker"), checkpoint, option_value(other, "--output")]
        make(name, cmd, " + ".join([name, *partners]), partners)
        made.update([name, *partners])
    return timings


SHARED_RERANK_OPTIONS = ("--reranker", "--reranker-checkpoint", "--output")
"""The options in which reranks that can share one pass may differ (everything else must be equal)."""


UNSHAREABLE_RERANK_OPTIONS = (*ALSO_RERANK_EXCLUDES, "--also-rerank", "--requests")
"""A rerank command with any of these never joins a shared pass (``--requests``: its own candidates and text)."""


def option_value(cmd: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``cmd`` (the last one), None when absent."""
    values = [cmd[i + 1] for i, arg in enumerate(cmd[:-1]) if arg == flag]
    return values[-1] if values else None


def _shareable_key(cmd: list[str]) -> tuple[str, ...] | None:
    """A plain ``rerank`` command without the options of :data:`SHARED_RERANK_OPTIONS` (None: not shareable)."""
    if not cmd or cmd[0] != "rerank" or any(a.split("=", 1)[0] in UNSHAREABLE_RERANK_OPTIONS for a in cmd):
        return None
    rest: list[str] = []
    skip = False
    for arg in cmd[1:]:
        if skip:
            skip = False
        elif arg in SHARED_RERANK_OPTIONS:
            skip = True
        else:
            rest.append(arg)
    return tuple(rest)


def rerank_partners(planner: Planner, name: str, pending: list[str]) -> list[str]:
    """The artifacts of ``pending`` (not made yet, in order) that can join ``name``'s rerank in one pass: missing
    ``rerank`` commands equal to ``name``'s but for :data:`SHARED_RERANK_OPTIONS`, that do not need ``name`` or
    each other (directly or not), so their other needs can be made first."""
    key = _shareable_key(planner.command(name))
    if key is None:
        return []

    def needs(art: str) -> set[str]:  # everything ``art`` needs, directly or not
        return set(planner.order([art])) - {art}

    partners: list[str] = []
    for other in pending:
        if other == name or planner.is_done(other) or not planner.available(other):
            continue
        if _shareable_key(planner.command(other)) != key:
            continue
        group = [name, *partners]
        if any(g in needs(other) or other in needs(g) for g in group):
            continue
        partners.append(other)
    return partners


def evaluate_conditions(planner: Planner, conditions: list[Condition], qrels: Mapping[str, Mapping[str, int]],
                        metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per condition: names, checkpoint, metric values (None when its run is missing)."""
    from ..evaluation import evaluate
    from ..types import read_run

    rows = []
    for cond in conditions:
        path = Path(planner.output(cond.run))
        row: dict[str, Any] = {"condition": cond.name, "first_stage": cond.first_stage, "reranker": cond.reranker,
                               "checkpoint": planner.output(cond.checkpoint) if cond.checkpoint else None,
                               "run": str(path), "available": planner.available(cond.run)}
        values = evaluate(read_run(path), qrels, metrics) if path.is_file() else {m: None for m in metrics}
        row.update({m: (round(v, 4) if v is not None else None) for m, v in values.items()})
        rows.append(row)
    return rows


def expected_for(condition: Condition, dataset: str, profile: str = "full", xfer: str = "",
                 profile_only: bool = False) -> Mapping[str, Any]:
    """Expected scores for one dataset: ``<dataset><xfer>@<profile>`` (e.g. ``scifact@deep``, needed wherever the
    profile changes the run) wins over ``<dataset><xfer>``; transferred runs (``xfer=".from-X"``) only match keys
    that name the transfer. ``profile_only``: only the profile's own key (a profile evaluated on a sample of the
    test queries is not judged by all-query expectations)."""
    keys = [f"{dataset}{xfer}@{profile}"] + ([] if profile_only else [f"{dataset}{xfer}"])
    for key in keys:
        if key in condition.expected:
            return condition.expected[key] or {}
    return {}


def check_rows(rows: list[dict[str, Any]], conditions: Mapping[str, Condition], dataset: str,
               profile: str = "full", xfers: Mapping[str, str] | None = None, profile_only: bool = False
               ) -> list[str]:
    """Failures: rows whose metric left ``expected ± tolerance`` (conditions without expectations pass).

    ``xfers`` maps a condition to its transfer suffix (:meth:`Planner.run_xfer`; missing = no transfer);
    ``profile_only`` as :func:`expected_for`."""
    failures = []
    for row in rows:
        xfer = (xfers or {}).get(row["condition"], "")
        expected = expected_for(conditions[row["condition"]], dataset, profile, xfer, profile_only)
        if not expected:
            continue
        tolerance = float(expected.get("tolerance", 0.0))
        for metric, value in expected.items():
            if metric == "tolerance":
                continue
            got = row.get(metric)
            if got is None:
                failures.append(f"{row['condition']}: {metric} missing (run not produced)")
            elif abs(got - float(value)) > tolerance + 1e-9:
                failures.append(f"{row['condition']}: {metric} = {got:.4f}, expected {float(value):.4f} ± {tolerance}")
    return failures


def raise_on_failures(failures: list[str]) -> None:
    """CheckFailed (exit code 5) naming every failure, if there is one."""
    if failures:
        raise CheckFailed("; ".join(failures))


def write_json(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` as indented JSON, written atomically."""
    from ..artifacts import atomic_write

    with atomic_write(path) as out:
        json.dump(rows, out, indent=2, sort_keys=False)
