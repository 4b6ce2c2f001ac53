"""Top-level click group. Sub-command modules are imported lazily so ``--help`` is instant and starts no JVM."""
from __future__ import annotations

import contextlib
import importlib
import logging
import shlex
import sys

import click

from ..errors import InputError, QPeftError, exit_report, sigterm_as_interrupt

# name -> "module:attribute"; a module is imported only when its command runs (or its --help is shown).
COMMANDS = {
    "index": ("pyserini_qpeft.cli.index:index", "Build a BEIR-flat Lucene index from a BEIR dataset, JSONL or TREC CAR corpus."),
    "search": ("pyserini_qpeft.cli.search:search", "BM25 or dense (FAISS) search, optionally followed by an LLM reranker."),
    "rerank": ("pyserini_qpeft.cli.rerank:rerank", "Rerank an existing TREC run with UPR / Q-PEFT / prompt tuning."),
    "evaluate": ("pyserini_qpeft.cli.evaluate:evaluate", "Evaluate a TREC run against qrels (values equal trec_eval's)."),
    "train": ("pyserini_qpeft.cli.train:train", "Train a Q-PEFT module or an LMORT tuner on a frozen LLM."),
    "lmort": ("pyserini_qpeft.cli.lmort:lmort", "LMORT layer analysis and training for dense retrieval."),
    "encode": ("pyserini_qpeft.cli.encode:encode", "Encode a corpus into a Pyserini-compatible FAISS index."),
    "encode-queries": ("pyserini_qpeft.cli.encode_queries:encode_queries",
                       "Pre-encode topics for stock `python -m pyserini.search.faiss --encoded-queries`."),
    "fuse": ("pyserini_qpeft.cli.fuse:fuse", "Fuse runs (RRF or score interpolation) into a hybrid run."),
    "dev-split": ("pyserini_qpeft.cli.interpolation:dev_split",
                  "First-stage run of the dev queries carved from a training split (as `train qpeft`)."),
    "select-interpolation": ("pyserini_qpeft.cli.interpolation:select_interpolation",
                             "Choose the first-stage interpolation weight of a rerank on dev queries."),
    "explain": ("pyserini_qpeft.cli.explain:explain", "Show which document tokens Q-PEFT selected or attended to."),
    "repro": ("pyserini_qpeft.cli.repro:repro", "Run the BEIR reproduction matrix and check expected scores."),
}


_ARGV = "pyserini_qpeft.argv"  # the root context's meta key (meta is shared by every nested context)


def command_line() -> str:
    """The ``pyserini-qpeft ...`` command now running, as a shell line: the arguments the group was given, also when
    ``repro`` or the demo runs it in-process (where ``sys.argv`` is the outer command's)."""
    ctx = click.get_current_context(silent=True)
    argv = ctx.meta.get(_ARGV) if ctx is not None else None
    return "pyserini-qpeft " + shlex.join(sys.argv[1:] if argv is None else argv)


_NESTED = False  # True while run_in_process runs a command inside another (an interruption goes to the outer one)


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use; maps package errors to documented exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            ctx.meta[_ARGV] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            with sigterm_as_interrupt():
                return super().invoke(ctx)
        except (QPeftError, KeyboardInterrupt, OSError) as exc:  # a package error, Ctrl-C/SIGTERM, a full disk
            if isinstance(exc, KeyboardInterrupt) and _NESTED:  # run by another command (repro): it reports it
                raise
            report = exit_report(exc)
            if report is None:  # an OSError that is a bug or the environment's: its traceback stands
                raise
            click.echo(report[0], err=True)
            ctx.exit(report[1])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyserini_qpeft")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level (also Anserini's Java logs); all logs go to stderr.")
def cli(verbose: bool) -> None:
    """Frozen-LLM reranking (UPR, Q-PEFT) and dense retrieval (LMORT) on Pyserini.

    Exit codes: 0 ok, 1 internal error, 2 usage error, 3 bad input data (names file and line),
    4 no Java >= 21, 5 `repro --check` failed, 6 model/checkpoint problem, 130 interrupted (Ctrl-C),
    143 terminated (SIGTERM).
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_in_process(args: list[str]) -> None:
    """Run one ``pyserini-qpeft`` command in this process; InputError when it fails (the runner of ``repro``).

    The sub-command's own stdout (an output path, a table) goes to stderr: the caller's stdout is its result only.
    """
    global _NESTED
    outer, _NESTED = _NESTED, True
    try:
        with contextlib.redirect_stdout(sys.stderr):
            code = cli.main(args=args, prog_name="pyserini-qpeft", standalone_mode=False)
    except click.exceptions.Abort as exc:  # click's non-standalone form of an interrupt: the interrupt itself
        if isinstance(exc.__cause__, KeyboardInterrupt):
            raise exc.__cause__ from None
        raise
    finally:
        _NESTED = outer
    if code not in (None, 0):
        raise InputError(f"command failed with exit code {code}: pyserini-qpeft {shlex.join(args)}")


def main() -> None:  # pragma: no cover - console entry point
    cli()
