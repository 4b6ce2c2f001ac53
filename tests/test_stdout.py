"""Machine-readable stdout: a command prints only its result; Java/Anserini logs and progress go to stderr.

These run the real CLI in a subprocess, because the JVM writes to file descriptor 1 directly (CliRunner cannot
see that).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_repro import write_yaml

pytestmark = pytest.mark.jvm


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyserini_qpeft", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


def test_index_prints_only_its_path_and_verbose_logs_go_to_stderr(toy_beir, tmp_path):
    quiet = cli("index", "--corpus", str(toy_beir / "corpus.jsonl"), "--index", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines() == [str(tmp_path / "quiet")]
    assert "INFO" not in quiet.stderr and "SLF4J" not in quiet.stderr  # Anserini's INFO lines hidden by default

    loud = cli("-v", "index", "--corpus", str(toy_beir / "corpus.jsonl"), "--index", str(tmp_path / "loud"))
    assert loud.returncode == 0, loud.stderr
    assert loud.stdout.splitlines() == [str(tmp_path / "loud")]
    assert "index.IndexCollection" in loud.stderr  # -v shows Anserini's own log lines, on stderr


def test_search_prints_only_the_run_path(toy_beir, tmp_path):
    index = tmp_path / "index"
    assert cli("index", "--corpus", str(toy_beir / "corpus.jsonl"), "--index", str(index)).returncode == 0
    run = tmp_path / "run.trec"
    done = cli("search", "--bm25", "--index", str(index), "--topics", str(toy_beir / "queries.jsonl"),
               "--output", str(run), "--hits", "3", env={"PYSERINI_QPEFT_DATA": str(toy_beir.parent)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(run)] and run.is_file()


def test_repro_json_stdout_parses_even_when_an_index_is_built_in_the_same_run(toy_beir, tmp_path):
    env = {"PYSERINI_QPEFT_DATA": str(toy_beir.parent)}
    args = ["repro", "beir", "--dataset", "toy", "--condition", "bm25", "--report-dir", str(tmp_path / "report"),
            "--yaml", str(write_yaml(tmp_path))]
    first = cli(*args, "--json", env=env)
    assert first.returncode == 0, first.stderr
    rows = json.loads(first.stdout)  # the whole stdout is one JSON document
    assert rows[0]["condition"] == "bm25" and 0 < rows[0]["ndcg@10"] <= 1
    assert "pyserini-qpeft index" in first.stderr and "pyserini-qpeft search" in first.stderr

    table = cli(*args, env=env)  # artifacts exist now; stdout is the markdown table and nothing else
    assert table.returncode == 0, table.stderr
    assert table.stdout == (tmp_path / "report" / "repro-toy.md").read_text() + "\n"
