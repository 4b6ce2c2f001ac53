"""``python -m pyserini_qpeft.search lucene|faiss <Pyserini's flags> [--reranker NAME ...]``.

Every Pyserini flag parses exactly as in ``python -m pyserini.search.lucene`` / ``pyserini.search.faiss``
because the parser is built from Pyserini's own argument definitions and the first stage is Pyserini's own
``__main__`` (run with ``runpy``). Our additions are only the ``--reranker*`` / ``--rerank-depth`` /
``--corpus`` flags; the first-stage run is then reranked and written to ``--output``.
Topics given as a local Pyserini-style name (``beir-v1.0.0-scifact-test``) or a BEIR ``queries.jsonl`` are
resolved through our data search path first, so nothing is downloaded.
"""
from __future__ import annotations

import argparse
import importlib
import runpy
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from ..errors import QPeftError

MODES = ("lucene", "faiss")


def add_reranker_args(parser: argparse.ArgumentParser) -> None:
    """Our flags, declared once in :mod:`pyserini_qpeft.rerank.flags` (the click CLI shares them); the LM flags are
    prefixed (``--reranker-model/-device/-dtype``) so they never clash with Pyserini's own."""
    from ..rerank.flags import add_argparse_flags, lm_flags, reranker_flags

    shared = {flag.flag: flag for flag in reranker_flags()}
    group = parser.add_argument_group("pyserini_qpeft reranking")
    add_argparse_flags(group, [shared["--reranker"], shared["--reranker-checkpoint"], shared["--rerank-depth"],
                               shared["--interpolate"]])
    group.add_argument("--corpus", default=None, help="Document text (JSONL/CBOR/BEIR dataset); default: the index's raw text.")
    add_argparse_flags(group, [*lm_flags("reranker-"), shared["--max-passage-tokens"]])


def _faiss_args(parser: argparse.ArgumentParser) -> None:
    """Pyserini 1.6.0's faiss flags: ``define_dsearch_args`` plus the ones its ``__main__`` adds inline."""
    module = importlib.import_module("pyserini.search.faiss.__main__")
    module.define_dsearch_args(parser)
    parser.add_argument("--topics", required=True)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--binary-hits", type=int, default=1000)
    parser.add_argument("--rerank", action="store_true")
    parser.add_argument("--topics-format", default="default")
    parser.add_argument("--output-format", default="trec")
    parser.add_argument("--output", required=False)
    parser.add_argument("--max-passage", action="store_true")
    parser.add_argument("--max-passage-hits", type=int, default=100)
    parser.add_argument("--max-passage-delimiter", default="#")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--remove-query", action="store_true")
    parser.add_argument("--explicit-truncate", action="store_true")


def build_parser(mode: str) -> argparse.ArgumentParser:
    from ..jvm import start_jvm

    start_jvm()  # Pyserini's search modules need the JVM at import time
    parser = argparse.ArgumentParser(prog=f"python -m pyserini_qpeft.search {mode}",
                                     description=f"Pyserini {mode} search followed by an optional LLM reranker.")
    if mode == "lucene":
        importlib.import_module("pyserini.search.lucene.__main__").define_search_args(parser)
    else:
        _faiss_args(parser)
    add_reranker_args(parser)
    return parser


def _split_ours(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    ours = argparse.ArgumentParser(add_help=False)
    add_reranker_args(ours)
    return ours.parse_known_args(list(argv))


def _replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out, skip = [], False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == flag:
            skip = True
            continue
        if token.startswith(flag + "="):
            continue
        out.append(token)
    return out + [flag, value]


def _local_topics(spec: str, workdir: Path) -> str:
    """A TSV copy of topics our data layer can resolve locally (else ``spec`` unchanged, for Pyserini)."""
    from ..data import load_topics
    from ..errors import InputError

    try:
        queries = load_topics(spec)
    except InputError:
        return spec
    path = workdir / "topics.tsv"
    with open(path, "w", encoding="utf-8") as out:
        for q in queries:
            out.write(f"{q.qid}\t{' '.join(q.text.split())}\n")
    return str(path)


def run(mode: str, argv: Sequence[str]) -> int:
    if mode not in MODES:
        raise SystemExit(f"usage: python -m pyserini_qpeft.search {{{','.join(MODES)}}} <Pyserini flags> [--reranker ...]")
    parser = build_parser(mode)
    args = parser.parse_args(list(argv))  # validates everything, Pyserini's flags included
    ours, pyserini_argv = _split_ours(argv)
    if not args.output:
        parser.error("--output is required")
    with tempfile.TemporaryDirectory(prefix="pyserini_qpeft-") as work:
        work = Path(work)
        pyserini_argv = _replace_flag(pyserini_argv, "--topics", _local_topics(args.topics, work))
        first_stage = work / "first-stage.trec" if ours.reranker != "identity" else Path(args.output)
        pyserini_argv = _replace_flag(pyserini_argv, "--output", str(first_stage))
        meta = Path(args.index) / "meta.json"
        if mode == "faiss" and meta.is_file():
            _dense_first_stage(args, first_stage)
        else:
            saved = sys.argv
            sys.argv = [f"pyserini.search.{mode}"] + pyserini_argv
            try:
                runpy.run_module(f"pyserini.search.{mode}", run_name="__main__", alter_sys=True)
            finally:
                sys.argv = saved
        if ours.reranker != "identity":
            _rerank(args, ours, first_stage)
    return 0


def _dense_first_stage(args: argparse.Namespace, output: Path) -> None:
    """Our FAISS indexes carry meta.json: the query encoder is rebuilt from it (LMORT, MiniLM, frozen LM)."""
    from ..data import load_topics
    from .encoders import dense_search

    queries = load_topics(args.topics)
    result = dense_search(Path(args.index), queries, k=args.hits, remove_query=args.remove_query)
    result.write(output, tag="Faiss")


def _rerank(args: argparse.Namespace, ours: argparse.Namespace, first_stage: Path) -> None:
    from ..rerank.pipeline import check_topics_cover_run, make_reranker, open_docstore, rerank_and_write
    from ..data import load_topics
    from ..types import read_run

    queries = load_topics(args.topics)
    first = read_run(first_stage)
    check_topics_cover_run(queries, first)
    docs = open_docstore(corpus=ours.corpus, index=None if ours.corpus else args.index)
    reranker = make_reranker(ours.reranker, ours.reranker_checkpoint, ours.reranker_model, ours.reranker_device,
                             ours.reranker_dtype, ours.max_passage_tokens)
    rerank_and_write(reranker, queries, first, docs, ours.rerank_depth, args.output, progress=True,
                     interpolate=ours.interpolate)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in MODES:
        print(f"usage: python -m pyserini_qpeft.search {{{','.join(MODES)}}} <Pyserini's flags> "
              "[--reranker NAME --reranker-checkpoint PATH --rerank-depth K --corpus PATH]", file=sys.stderr)
        raise SystemExit(2)
    try:
        raise SystemExit(run(argv[0], argv[1:]))
    except QPeftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
