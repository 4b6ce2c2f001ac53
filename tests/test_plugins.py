"""Third-party rerankers: a package declaring an entry point in ``pyserini_qpeft.rerankers`` is usable from the CLI
without touching this package (PyTerrier-style plugins)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
from pyserini_qpeft.rerank import check_depth, merge_reranked, query_texts
from pyserini_qpeft.types import Run


class ReverseReranker:
    """Reverses the top ``depth`` hits (reads every document, as a real reranker would)."""

    name = "reverse-toy"

    def rerank(self, queries, run, docs, depth=100, progress=True, state_path=None):
        check_depth(depth)
        query_texts(queries, run)
        out = Run(tag=self.name)
        for qid, hits in run.hits.items():
            top = hits[:depth]
            scores = {h.docid: float(k) + 0 * len(docs.get(h.docid).text) for k, h in enumerate(top)}
            out.hits[qid] = merge_reranked(hits, scores, depth)
        return out


def make_reverse(*, lm=None, checkpoint=None, scorer_overrides=None):
    return ReverseReranker()
'''


def cli_command() -> list[str]:
    """The installed ``pyserini-qpeft`` console script, else ``python -m pyserini_qpeft`` (the same click group)."""
    script = Path(sys.executable).with_name("pyserini-qpeft")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pyserini_qpeft"]


@pytest.fixture()
def plugin_path(tmp_path) -> Path:
    """A tiny installed-looking distribution: a module plus ``*.dist-info`` with ``entry_points.txt``."""
    root = tmp_path / "site"
    (root / "toy_reranker_plugin-0.1.dist-info").mkdir(parents=True)
    (root / "toy_reranker_plugin.py").write_text(PLUGIN)
    (root / "toy_reranker_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: toy-reranker-plugin\nVersion: 0.1\n")
    (root / "toy_reranker_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[pyserini_qpeft.rerankers]\nreverse-toy = toy_reranker_plugin:make_reverse\n")
    return root


def run_cli(args: list[str], cwd: Path, pythonpath: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(cli_command() + args, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_plugin_reranker_runs_from_the_cli(toy_beir, plugin_path, tmp_path):
    run = tmp_path / "bm25.trec"
    run.write_text("".join(f"{q} Q0 d{k} {k} {10 - k}.0 bm25\n" for q in ("q1", "q2") for k in range(1, 6)))
    out = tmp_path / "reversed.trec"
    args = ["rerank", "--run", str(run), "--topics", str(toy_beir / "queries.jsonl"), "--corpus",
            str(toy_beir / "corpus.jsonl"), "--output", str(out), "--reranker", "reverse-toy", "--rerank-depth", "3",
            "-q"]
    proc = run_cli(args, tmp_path, plugin_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split() for line in out.read_text().splitlines()]
    assert [l[2] for l in lines if l[0] == "q1"] == ["d3", "d2", "d1", "d4", "d5"]
    assert {l[5] for l in lines} == {"reverse-toy"}

    helped = run_cli(["rerank", "--help"], tmp_path, plugin_path)
    assert helped.returncode == 0 and "reverse-toy" in helped.stdout

    missing = run_cli(args, tmp_path, None)  # without the plugin on the path the name is unknown
    assert missing.returncode == 2 and "'reverse-toy' is not one of" in missing.stderr  # usage error, no work


def test_plugin_cannot_shadow_a_builtin(plugin_path, tmp_path):
    info = plugin_path / "toy_reranker_plugin-0.1.dist-info" / "entry_points.txt"
    info.write_text("[pyserini_qpeft.rerankers]\nupr = toy_reranker_plugin:make_reverse\n")
    code = ("from pyserini_qpeft.rerank import get_reranker_factory; "
            "print(get_reranker_factory('upr').__module__)")
    env = dict(os.environ, PYTHONPATH=str(plugin_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "pyserini_qpeft.rerank.lm"
    assert "shadowed" in proc.stderr
