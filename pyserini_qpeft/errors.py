"""Exceptions with documented process exit codes.

Exit codes of the ``pyserini-qpeft`` CLI:

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     unexpected internal error (a bug: please report it)
2     usage error, before any work (raised by click): unknown or missing
      flag, bad option value (``--k1 -1``, unknown ``--reranker``), a path
      given to an option that must exist (``--run``) missing,
      a name the matrix lacks (``repro --profile/--condition/--baseline``),
      a token budget past the model's context (``--max-passage-tokens``)
3     bad input data: malformed run/qrels/topics/corpus line, undecodable
      bytes, duplicate docid, a file named by a value that is not found
      (index, topics, qrels, dataset), unknown docid, empty topics, an output
      that cannot be written (also a full disk, a file-size limit or a
      quota met while writing) or would replace something that is not ours,
      a damaged index (the message names file and line)
4     no usable Java >= 21 runtime for the Lucene (Pyserini) side
5     ``repro --check``: a score left its tolerance
6     model/checkpoint problem: checkpoint for another base model, missing
      or corrupt weights, model not found
130   interrupted (Ctrl-C)
143   terminated (SIGTERM), after the same clean-up as Ctrl-C
====  =====================================================================
"""
from __future__ import annotations

import contextlib
from typing import Iterator

INTERRUPTED = 130  # 128 + SIGINT, what shells report for a job stopped with Ctrl-C
INTERRUPTED_MESSAGE = ("interrupted: finished outputs are intact, partial ones were not published; rerank and train "
                       "resume where they stopped")
TERMINATED = 143  # 128 + SIGTERM, what a batch scheduler, `timeout` or `kill` sends


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt (:func:`sigterm_as_interrupt`) so that the clean-up Ctrl-C gets runs too:
    temporaries removed, a child JVM killed, the resume state closed."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM raises :class:`Terminated` instead of ending the process
    at once (Python's default: no ``finally`` runs, a child JVM is orphaned and keeps writing); the previous handler
    is restored after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield  # (an ignored SIGTERM, e.g. `trap '' TERM` in a wrapper, stays ignored)
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruption_exit(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The message and exit code for Ctrl-C (130) or SIGTERM (143)."""
    if isinstance(exc, Terminated):
        return INTERRUPTED_MESSAGE.replace("interrupted:", "terminated (SIGTERM):", 1), TERMINATED
    return INTERRUPTED_MESSAGE, INTERRUPTED


class QPeftError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InputError(QPeftError):
    """Malformed or missing user input (files, names, ids)."""

    exit_code = 3

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class UsageError(InputError):
    """An option value the command cannot use, found out before any work (e.g. a ``repro --profile`` that the
    matrix lacks): exit 2, as click's own usage errors."""

    exit_code = 2


class JavaError(QPeftError):
    """No Java >= 21 runtime could be found or started."""

    exit_code = 4


class CheckFailed(QPeftError):
    """A reproduction score is outside its tolerance."""

    exit_code = 5


class ModelError(QPeftError):
    """A model or checkpoint cannot be used (wrong base model, missing weights)."""

    exit_code = 6


WRITE_FAILURES = ("ENOSPC", "EFBIG", "EDQUOT")  # errno names: a full disk, a file-size limit (ulimit -f), a quota


def write_failure(exc: OSError) -> InputError | None:
    """The exit-3 error for an OSError that means the disk (or a size limit, or a quota) is full; None for any other
    OSError (a bug or an environment problem, reported as it is)."""
    import errno

    codes = {getattr(errno, name) for name in WRITE_FAILURES if hasattr(errno, name)}
    if exc.errno not in codes:
        return None
    where = f"{exc.filename}: " if exc.filename else ""
    return InputError(f"{where}cannot write: {exc.strerror or exc} (a full disk, a file-size limit or a quota); "
                      f"finished outputs are intact and partial ones were not published: free space and run the "
                      f"command again (rerank and train resume where they stopped)")


def exit_report(exc: BaseException) -> tuple[str, int] | None:
    """The one line and the exit code a command reports ``exc`` with: a package error (its code), Ctrl-C (130) or
    SIGTERM (143), a full disk (3); None for anything else (a bug: its traceback stands). Both command lines
    (``pyserini-qpeft`` and ``python -m pyserini_qpeft.search``) report through it."""
    if isinstance(exc, QPeftError):
        return f"error: {exc}", exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return interruption_exit(exc)
    if isinstance(exc, OSError):
        failure = write_failure(exc)
        if failure is not None:
            return f"error: {failure}", failure.exit_code
    return None
