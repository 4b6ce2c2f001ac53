"""``python -m pyserini_qpeft.search lucene|faiss <Pyserini's flags> [--reranker NAME ...]``.

Every Pyserini flag parses exactly as in ``python -m pyserini.search.lucene`` / ``pyserini.search.faiss``
because the parser is built from Pyserini's own argument definitions and the first stage is Pyserini's own
``__main__`` (run with ``runpy``). Our additions are only the ``--reranker*`` / ``--rerank-depth`` /
``--corpus`` flags; the first-stage run is then reranked and written to ``--output``.
Topics our data layer reads (a BEIR name found on the data search path, a BEIR ``queries.jsonl``, a TSV or TREC topics
file: :func:`pyserini_qpeft.data.load_topics`) reach Pyserini as a TSV copy, read there as Pyserini reads any topics
(an all-digit id becomes a number, as in stock Pyserini's runs); the reranker scores the texts as given, under the ids
the first stage wrote; an Anserini JSON-lines topics file is read by its ``title``, as Pyserini reads it. Pyserini's
other topic names go to Pyserini as given (it orders some its own way), and the reranker reads them as Pyserini does.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import runpy
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from ..errors import QPeftError, exit_report, sigterm_as_interrupt

MODES = ("lucene", "faiss")


def add_reranker_args(parser: argparse.ArgumentParser) -> None:
    """Our flags, declared once in :mod:`pyserini_qpeft.rerank.flags` (the click CLI shares them); the LM flags are
    prefixed (``--reranker-model/-device/-dtype``) so they never clash with Pyserini's own."""
    from ..rerank.flags import add_argparse_flags, lm_flags, reranker_flags

    shared = {flag.flag: flag for flag in reranker_flags()}
    group = parser.add_argument_group("pyserini_qpeft reranking")
    add_argparse_flags(group, [shared["--reranker"], shared["--reranker-checkpoint"], shared["--rerank-depth"],
                               shared["--interpolate"]])
    group.add_argument("--corpus", default=None,
                       help="Document text (JSONL/TSV/CBOR/BEIR dataset); default: the Lucene index's raw text, or "
                            "the corpus our FAISS index recorded when it was encoded.")
    add_argparse_flags(group, [*lm_flags("reranker-", from_checkpoint=True), shared["--max-passage-tokens"],
                               shared["--max-query-tokens"], shared["--prompt"]])
    group.add_argument("--reranker-trust-remote-code", action="store_true",
                       help="Allow our models (the reranker's LM, an LMORT query encoder) to run code shipped with "
                            "them (transformers' trust_remote_code). Off by default: only run code you trust.")


def ours_parser() -> argparse.ArgumentParser:
    """Only our flags, matched exactly (``allow_abbrev=False``): Pyserini's ``--rerank`` or ``--max-passage`` are never
    taken for ``--rerank-depth`` or ``--max-passage-tokens``."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_reranker_args(parser)
    return parser


PEEKED = ("--index", "--topics", "--output", "--output-format", "--topics-format", "--hits", "--remove-query",
          "--device", "--batch-size", "--language")
"""The Pyserini flags this module reads itself (:func:`_peek`)."""


def _pyserini_flags(mode: str) -> frozenset[str]:
    """Every ``--flag`` that ``pyserini.search.<mode>``'s parser defines, read from its source (the parser is built
    in its ``__main__`` block, so it cannot be imported)."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("pyserini")  # the top package only: importing pyserini.search needs the JVM
    source = Path(spec.origin).parent / "search" / mode / "__main__.py" if spec and spec.origin else None
    if source is None or not source.is_file():
        return frozenset()
    return frozenset(re.findall(r"""['"](--[A-Za-z0-9][\w.-]*)['"]""", source.read_text(encoding="utf-8")))


def _peek(argv: Sequence[str], mode: str = "lucene") -> argparse.Namespace:
    """The Pyserini flags this module reads itself (everything is still parsed and validated by Pyserini). One of
    them abbreviated (``--output-f``, which Pyserini's parser would accept) is a usage error: read here it would be
    missed (a reranked run written as TREC where msmarco was asked for). Pyserini's own flags (``--b``) are not
    abbreviations."""
    known = _pyserini_flags(mode)
    for token in argv:
        flag = token.split("=", 1)[0]
        if (flag.startswith("--") and flag not in PEEKED and flag not in known
                and any(p.startswith(flag) for p in PEEKED)):
            full = ", ".join(p for p in PEEKED if p.startswith(flag))
            raise UsageError(f"{flag}: write Pyserini's flag in full ({full})")
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--index")
    parser.add_argument("--topics")
    parser.add_argument("--output")
    parser.add_argument("--output-format", default="trec")
    parser.add_argument("--topics-format", default="default")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--remove-query", action="store_true")
    parser.add_argument("--device", default=None)  # faiss: where the query encoder runs
    parser.add_argument("--batch-size", type=int, default=None)  # faiss: queries per encoder batch
    parser.add_argument("--language", default="en")  # lucene: the query analyzer
    return parser.parse_known_args(list(argv))[0]


# What our own FAISS indexes (meta.json: the query encoder is rebuilt from it) accept; every other Pyserini faiss flag
# (an encoder, PRF, HNSW, PCA, max-passage ...) would be silently ignored there, so it is refused.
DENSE_FLAGS = {"--index": 1, "--topics": 1, "--output": 1, "--hits": 1, "--remove-query": 0, "--batch-size": 1,
               "--threads": 1, "--output-format": 1, "--device": 1}


def _check_dense_flags(argv: Sequence[str]) -> None:
    i = 0
    while i < len(argv):
        flag = argv[i].split("=", 1)[0]
        if flag.startswith("--"):
            if flag not in DENSE_FLAGS:
                raise UsageError(f"{flag} does not apply to a pyserini_qpeft FAISS index (its query encoder comes "
                                 f"from the index's meta.json); it accepts {', '.join(sorted(DENSE_FLAGS))}")
            i += 1 + (DENSE_FLAGS[flag] if "=" not in argv[i] else 0)
        else:
            raise UsageError(f"unexpected argument {argv[i]!r}")


class UsageError(Exception):
    """A command-line mistake: printed with the usage line, exit code 2 (as argparse does)."""


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


def _local_topics(spec: str, workdir: Path, topics_format: str = "default",
                  for_pyserini: bool = True) -> tuple[str, list | None]:
    """``(what Pyserini gets as --topics, the queries as read here)`` for topics our data layer can resolve locally:
    a TSV copy of them (as Pyserini reads any topics, an all-digit id becomes a number: "007" is its query 7); ``(spec,
    None)`` otherwise (a name for Pyserini to resolve, a format only it reads).

    A topics *file* is always read here, so a malformed line, a repeated query id or a query id that a TREC run
    cannot hold (empty, whitespace) is an InputError naming the file before Pyserini runs; only a name this
    package cannot resolve (e.g. a Pyserini topics name offline) goes to Pyserini as given, and so do the formats
    only Pyserini reads: another ``--topics-format`` (KILT, M-BEIR) and Pyserini's ``.json`` topics. The copy's
    texts have their tabs and line breaks made spaces (nothing else changes); a reranker reads the texts as given
    (:func:`pyserini_keyed`)."""
    import re

    from ..data import load_topics
    from ..data.pyserini_names import looks_like_path
    from ..errors import InputError
    from ..types import is_trec_word

    if topics_format != "default" or spec.endswith(".json"):
        return spec, None
    if for_pyserini and _pyserini_reads_itself(spec):  # (our FAISS index: the topics are read here, as given)
        return spec, None
    try:
        queries = _anserini_json_topics(spec) or load_topics(spec)
    except InputError:
        if Path(spec).expanduser().is_file() or looks_like_path(spec):  # a file, or a path to none: ours to say
            raise
        return spec, None
    bad = next((q.qid for q in queries if not is_trec_word(q.qid)), None)
    if bad is not None:
        raise InputError(f"query id {bad!r} is empty or contains whitespace; a TREC run cannot hold it", spec)
    empty = next((q.qid for q in queries if not q.text.strip()), None)
    if empty is not None:  # Anserini's topic reader cannot read its line: a Pyserini traceback, no run
        raise InputError(f"query {empty} has empty text", spec)
    path = workdir / "topics.tsv"
    with open(path, "w", encoding="utf-8") as out:
        for q in queries:
            # only what would break the TSV line becomes a space: Pyserini reads the rest as in the user's file
            # (with --pretokenized a no-break space is part of a token; Python's split() made it a separator)
            text = re.sub(r"[\t\r\n]", " ", q.text)
            out.write(f"{q.qid}\t{text}\n")
    return str(path), queries


def _pyserini_reads_itself(spec: str) -> bool:
    """A Pyserini topics name other than a BEIR dataset on the data search path: Pyserini resolves it itself (some
    names have a predefined query order, e.g. ``msmarco-doc-dev``; a TSV copy wrote them in id order)."""
    from ..data.names import resolve_source
    from ..errors import InputError

    try:
        return resolve_source(spec, "topics").pyserini
    except InputError:
        return False  # load_topics names the problem (or it is a name for Pyserini alone: passed on then)


def _anserini_json_topics(spec: str) -> list | None:
    """The queries of an Anserini JSON-lines topics file (records with ``id`` and ``title``, no BEIR ``_id``) as
    Pyserini reads them: the ``title`` is the query (read as BEIR queries, a record's ``contents`` or ``text`` was);
    None for any other topics."""
    import json

    from ..data.formats import iter_jsonl
    from ..errors import InputError
    from ..textio import first_line
    from ..types import Query

    path = Path(spec).expanduser()
    if not path.is_file() or not path.name.lower().endswith((".jsonl", ".jsonl.gz")):
        return None
    try:
        record = json.loads(first_line(path))
    except (ValueError, InputError):
        return None  # load_topics names the bad line
    if not (isinstance(record, dict) and "_id" not in record and "id" in record and "title" in record):
        return None
    queries = []
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj.get("title"), str) or obj.get("id") is None:
            raise InputError("an Anserini topics record needs an 'id' and a string 'title' (the query)", str(path),
                             lineno)
        queries.append(Query(str(obj["id"]), obj["title"]))
    return queries


def pyserini_keyed(queries: Sequence, source: str) -> list:
    """``queries`` under the ids Pyserini's first stage gives them reading :func:`_local_topics`' TSV copy, texts
    unchanged: when every id is a Java int, Anserini's ``TsvIntTopicReader`` keys them by number (``"+1"`` -> 1,
    ``"-01"`` -> -1, ``"007"`` -> 7); else its string reader keeps them and Pyserini makes each all-digit one a number
    (``get_topics_with_reader``). Decimal digits of any script count, as Java's ``parseInt`` and Python's ``int``
    read them (full-width "１" is query 1). InputError for two ids of one number ("1", "01": Pyserini merges them) or
    an id of digits that are not decimal ("²", which Pyserini cannot read)."""
    import re

    from ..errors import InputError
    from ..types import Query

    def java_int(qid: str) -> bool:
        return bool(re.fullmatch(r"[+-]?\d+", qid)) and -2 ** 31 <= int(qid) < 2 ** 31

    numbered = all(java_int(q.qid) for q in queries)
    keyed: dict[str, str] = {}
    out = []
    for q in queries:
        key = q.qid
        if q.qid.isdigit() and not q.qid.isdecimal():
            raise InputError(f"query id {q.qid!r}: Pyserini reads an id of digits as a number, and this one is "
                             f"none it can read", source)
        if numbered or q.qid.isdigit():
            key = str(int(q.qid))
        if key in keyed:
            raise InputError(f"query ids {keyed[key]!r} and {q.qid!r} are one query to Pyserini, which reads ids of "
                             f"digits as numbers", source)
        keyed[key] = q.qid
        out.append(Query(key, q.text))
    return out


def pyserini_order(keyed: Sequence) -> list:
    """:func:`pyserini_keyed` queries in the order Pyserini's query iterator gives them: ``sorted`` over its keys,
    numbers numerically when every key is one, else every key by its text."""
    import re

    if all(re.fullmatch(r"-?[0-9]+", q.qid) for q in keyed):
        return sorted(keyed, key=lambda q: int(q.qid))
    return sorted(keyed, key=lambda q: q.qid)


def run(mode: str, argv: Sequence[str]) -> int:
    """Run Pyserini's own ``pyserini.search.<mode>`` with every flag but ours, then our reranker (if any).

    Pyserini's parser validates its flags (an unknown or mistyped one exits 2 as in Pyserini). With a reranker the
    first stage is written as TREC to a temporary file, reranked, and the result written in ``--output-format``.
    """
    if mode not in MODES:
        raise SystemExit(f"usage: python -m pyserini_qpeft.search {{{','.join(MODES)}}} <Pyserini flags> [--reranker ...]")
    from ..jvm import start_jvm

    start_jvm()  # Pyserini's search modules need the JVM at import time
    ours, rest = ours_parser().parse_known_args(list(argv))
    if ours.reranker_trust_remote_code:
        from ..lm.backbone import allow_remote_code

        allow_remote_code()
    if "-h" in rest or "--help" in rest:
        help_parser = argparse.ArgumentParser(prog=f"python -m pyserini_qpeft.search {mode}", add_help=False,
                                              description="Pyserini's own flags (below), plus these:")
        add_reranker_args(help_parser)
        print(help_parser.format_help())
        _run_pyserini(mode, ["--help"])
        return 0
    peek = _peek(rest, mode)
    dense_ours = mode == "faiss" and peek.index is not None and (Path(peek.index) / "meta.json").is_file()
    if dense_ours:
        _check_dense_flags(rest)
    if not peek.output or not peek.topics or not peek.index:
        raise UsageError("--index, --topics and --output are required")
    if mode == "lucene" and Path(peek.index).is_dir():
        from .lucene import index_language

        built = index_language(peek.index)
        if built is not None and built != peek.language:  # Pyserini analyses queries with --language alone
            raise UsageError(f"--index {peek.index} was built with the {built!r} analyzer (`pyserini-qpeft index "
                             f"--language {built}`): pass --language {built} (Pyserini analyses queries with "
                             f"--language, default en)")
    from ..artifacts import check_replaceable_file, refuse_output_over_inputs

    refuse_output_over_inputs({"--output": peek.output}, {"--topics": peek.topics, "--index": peek.index,
                                                          "--corpus": ours.corpus})
    if peek.output_format in ("trec", "msmarco"):  # a user's file is never replaced (KILT lines are Pyserini's)
        check_replaceable_file(peek.output, "run")
    reranking = ours.reranker != "identity"
    if reranking and peek.output_format not in ("trec", "msmarco", "kilt"):
        raise UsageError(f"--output-format {peek.output_format!r}: expected trec, msmarco or kilt")
    if reranking and ours.corpus:  # a mistyped --corpus is said before the first stage runs, not after it
        from ..data import iter_documents

        iter_documents(ours.corpus)
    from ..artifacts import sweep_stale, temp_prefix

    # the work folder (topics copy, first-stage run) in $TMPDIR, named as every temporary of ours, so that one left
    # by a SIGKILL is swept by the next search (nothing removed it). Not beside --output: Pyserini reads a topics
    # file whose path holds "beir" with another reader (ids such as "+1" then differ), and outputs are named so.
    anchor = Path(tempfile.gettempdir()) / "pyserini_qpeft-compat"
    sweep_stale(anchor)
    with tempfile.TemporaryDirectory(prefix=temp_prefix(anchor), suffix=".tmp", dir=anchor.parent) as work:
        work = Path(work)
        topics, queries = _local_topics(peek.topics, work, peek.topics_format, for_pyserini=not dense_ours)
        # under Pyserini's ids ("007" is its 7), also on our FAISS index, where they are also in its query order
        # (as stock pyserini.search.faiss on that index, and this command's lucene mode: a hybrid of the two fuses
        # one query, not "7" and "007")
        keyed = None if queries is None else pyserini_keyed(queries, peek.topics)
        if dense_ours and keyed is not None:
            keyed = pyserini_order(keyed)
        first_stage = work / "first-stage.trec"  # reranked, or moved into place at the end: --output is atomic
        pyserini_argv = _replace_flag(rest, "--topics", topics)
        pyserini_argv = _replace_flag(pyserini_argv, "--output", str(first_stage))
        if reranking:
            pyserini_argv = _replace_flag(pyserini_argv, "--output-format", "trec")  # we read it back
        if dense_ours:
            _dense_first_stage(peek, keyed, first_stage, "trec" if reranking else peek.output_format)
        else:
            # Pyserini prints its arguments (our temporary topics and run paths) on stdout: they go to stderr,
            # with its progress, so stdout stays the command's own output
            with contextlib.redirect_stdout(sys.stderr):
                try:
                    _run_pyserini(mode, pyserini_argv)
                except OSError as exc:  # e.g. a full $TMPDIR: Pyserini's failed write names no file
                    from ..artifacts.files import with_filename

                    raise with_filename(exc, first_stage) from exc
                except SystemExit as exc:  # Pyserini's bare exit() after a message: it stopped, no run
                    if exc.code not in (None, 0):
                        raise
                    from ..errors import InputError

                    raise InputError("Pyserini stopped without searching (its message is above: e.g. an --index "
                                     "that is neither an index folder nor one of its prebuilt index names, or --k1 "
                                     "without --b); no run was written", peek.index) from None
        if reranking:
            _rerank(peek, ours, first_stage, topics, keyed)  # under the first stage's ids
        else:
            _publish(first_stage, Path(peek.output))
    return 0


def _publish(written: Path, output: Path) -> None:
    """Copy Pyserini's finished run from the temporary folder to ``output`` atomically (a sibling temp file
    renamed into place), so an interrupted search leaves no half-written run."""
    import shutil

    from ..artifacts import atomic_write

    if not written.is_file():  # e.g. Pyserini wrote nothing for an empty topic set: as Pyserini, no file
        return
    with atomic_write(output, "wb", encoding=None) as out, open(written, "rb") as src:
        shutil.copyfileobj(src, out)


def _run_pyserini(mode: str, argv: Sequence[str]) -> None:
    """``python -m pyserini.search.<mode> ARGV`` in this process (its own parser, its own exit codes)."""
    saved = sys.argv
    sys.argv = [f"pyserini.search.{mode}", *argv]
    try:
        runpy.run_module(f"pyserini.search.{mode}", run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved


def _dense_first_stage(args: argparse.Namespace, queries: list | None, output: Path, output_format: str) -> None:
    """Our FAISS indexes carry meta.json: the query encoder is rebuilt from it (LMORT, MiniLM, frozen LM). With
    ``--remove-query`` the query's own document is dropped from the top ``--hits``, as Pyserini does."""
    from ..errors import InputError
    from .encoders import dense_search

    if queries is None:
        raise InputError("topics this package cannot read (a Pyserini .json topics file, a --topics-format other "
                         "than default, or a name it cannot resolve) cannot search one of its FAISS indexes",
                         str(args.topics))
    result = dense_search(Path(args.index), queries, k=args.hits, remove_query=args.remove_query,
                          device=args.device or "auto", batch_size=args.batch_size or 32)
    write_run_as(result, output, output_format, args, tag="Faiss")


def write_run_as(run, path: str | Path, output_format: str, args: argparse.Namespace, tag: str | None = None) -> None:
    """Write ``run`` in Pyserini's ``--output-format``: ``trec`` (ours), ``msmarco`` (``qid<TAB>docid<TAB>rank``) or
    ``kilt`` (Pyserini's KiltWriter, which needs Pyserini's KILT topics); atomically."""
    from ..types import OUTPUT_FORMATS

    if output_format in OUTPUT_FORMATS:
        run.write(path, tag=tag, output_format=output_format)
        return
    from pyserini.output_writer import OutputFormat, get_output_writer
    from pyserini.query_iterator import TopicsFormat, get_query_iterator

    topics = get_query_iterator(args.topics, TopicsFormat(args.topics_format)).topics
    # Pyserini keys an all-digit query id as a number ("007" is its query 7); the run's ids are text
    key = {str(topic): topic for topic in topics}
    from ..artifacts import temp_prefix

    tmp = Path(path).with_name(f"{temp_prefix(path)}kilt.tmp")
    with get_output_writer(str(tmp), OutputFormat(output_format), "w", max_hits=max(map(len, run.hits.values())),
                           tag=run.tag, topics=topics) as writer:
        for qid, hits in run.hits.items():
            writer.write(key.get(qid, qid), hits)
    os.replace(tmp, path)


def _rerank(args: argparse.Namespace, ours: argparse.Namespace, first_stage: Path, topics: str,
            queries: list | None) -> None:
    """Rerank the first stage; the result goes to ``--output`` in ``--output-format`` (resumable through
    ``<output>.partial`` as every rerank). ``queries``: the topics as read here, under the first stage's ids
    (:func:`pyserini_keyed`); None: read ``topics`` as Pyserini reads them."""
    from ..rerank.pipeline import check_topics_cover_run, make_reranker, open_docstore, rerank_and_write, run_docids
    from ..types import OUTPUT_FORMATS, Query, read_run

    if queries is None:
        from pyserini.query_iterator import TopicsFormat, get_query_iterator

        iterator = get_query_iterator(topics, TopicsFormat(args.topics_format))
        queries = [Query(str(qid), str(text)) for qid, text in iterator]
    first = read_run(first_stage)
    check_topics_cover_run(queries, first)
    docs = open_docstore(corpus=ours.corpus, index=None if ours.corpus else args.index,
                         needed=run_docids(first, ours.rerank_depth))
    reranker = make_reranker(ours.reranker, ours.reranker_checkpoint, ours.reranker_model, ours.reranker_device,
                             ours.reranker_dtype, ours.max_passage_tokens, prompt=ours.prompt,
                             max_query_tokens=ours.max_query_tokens)
    output = Path(args.output)
    if args.output_format in OUTPUT_FORMATS:  # trec, msmarco: written by the rerank itself
        rerank_and_write(reranker, queries, first, docs, ours.rerank_depth, output, progress=True,
                         interpolate=ours.interpolate, output_format=args.output_format)
        return
    state_home = output.with_name(output.name + ".trec")  # kilt: a TREC run first, then Pyserini's writer
    rerank_and_write(reranker, queries, first, docs, ours.rerank_depth, state_home, progress=True,
                     interpolate=ours.interpolate)
    reranked = read_run(state_home)
    write_run_as(reranked, output, args.output_format, args, tag=reranked.tag)
    state_home.unlink()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in MODES:
        print(f"usage: python -m pyserini_qpeft.search {{{','.join(MODES)}}} <Pyserini's flags> "
              "[--reranker NAME --reranker-checkpoint PATH --rerank-depth K --corpus PATH]", file=sys.stderr)
        raise SystemExit(2)
    try:
        with sigterm_as_interrupt():
            code = run(argv[0], argv[1:])
        raise SystemExit(code)
    except UsageError as exc:
        print(f"usage: python -m pyserini_qpeft.search {argv[0]} <Pyserini's flags> [--reranker ...]\n"
              f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except (QPeftError, KeyboardInterrupt, OSError) as exc:  # as the pyserini-qpeft commands: a line, no traceback
        report = exit_report(exc)
        if report is None:
            raise
        print(report[0], file=sys.stderr)
        raise SystemExit(report[1]) from None
