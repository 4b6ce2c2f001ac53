"""Running what a plan lacks, in dependency order, through a caller-given command runner; reranks of the same
candidates share one LM pass (``--also-rerank``)."""
from __future__ import annotations

import shlex
import time
from typing import Callable, Sequence

from ..rerank.flags import ALSO_RERANK_EXCLUDES
from .matrix import Condition
from .plan import Planner, record_path


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
        # a new artifact's record is written before its command runs: a kill (or a full disk) after the command
        # published it left it unrecorded, and the next repro took it for one made outside repro (reused for any
        # command); an existing one handed to a self-checking command (index) is recorded once that accepted it
        made_now = (name, *partners)  # a shared pass's runs are each its own rerank's, byte for byte
        fresh = [n for n in made_now if planner.status(n) is None]
        for n in fresh:
            planner.record(n)
        start = time.time()
        try:
            runner(cmd)
        except BaseException:  # failed or interrupted: a record of an artifact not made would vouch for any later one
            for n in fresh:
                if planner.status(n) is None:
                    record_path(planner.output(n)).unlink(missing_ok=True)
            raise
        timings[name] = time.time() - start
        for n in made_now:
            if n not in fresh:
                planner.record(n)
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
            if not recorded:
                foreign = foreign_base_model(planner.command(name), planner.output(name))
                if foreign is not None:  # a README walkthrough's checkpoint of another model at a profile's path
                    from ..errors import InputError

                    raise InputError(f"made outside repro (no record of its command) on the base model {foreign!r}, "
                                     f"but this plan trains on {planned_model(planner.command(name))!r}: its rows "
                                     f"would not be this profile's; move or delete it to make it with this plan",
                                     planner.output(name))
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


def planned_model(cmd: list[str]) -> str:
    """The ``--model`` a plan's command loads (the packaged default when it names none)."""
    from ..lm.backbone import DEFAULT_MODEL

    return option_value(cmd, "--model") or DEFAULT_MODEL


def foreign_base_model(cmd: list[str], output: str) -> str | None:
    """For a ``train qpeft|lmort`` command whose output exists without repro's record: the base model its checkpoint
    records when that is not the model ``cmd`` trains on (None: the same model, or nothing readable to compare)."""
    from ..artifacts.checks import same_model
    from ..errors import QPeftError

    if cmd[:1] != ["train"] or len(cmd) < 2 or cmd[1] not in ("qpeft", "lmort"):
        return None
    if cmd[1] == "qpeft":
        from ..qpeft.checkpoint import base_model_name

        recorded = base_model_name(output)
    else:
        from ..lm.backbone import model_for_identity
        from ..lmort.tuner import read_lmort_meta

        try:
            recorded = model_for_identity(read_lmort_meta(output)["base_model"]["model_id"])
        except (QPeftError, OSError, KeyError, TypeError):
            recorded = None
    if not isinstance(recorded, str) or same_model(recorded, planned_model(cmd)):
        return None
    return recorded


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
