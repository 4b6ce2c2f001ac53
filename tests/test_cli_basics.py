"""The CLI is instant, starts no JVM on import/--help, and maps bad input to documented exit codes."""
from __future__ import annotations

import subprocess
import sys
import time

from click.testing import CliRunner

from pyserini_qpeft.cli.main import cli


def test_import_and_help_start_no_jvm_and_are_fast():
    code = ("import sys, time; t = time.time(); import pyserini_qpeft, pyserini_qpeft.cli.main as m; "
            "from click.testing import CliRunner; r = CliRunner().invoke(m.cli, ['--help']); "
            "assert r.exit_code == 0, r.output; "
            "bad = [k for k in sys.modules if k.split('.')[0] in ('jnius', 'pyserini', 'torch', 'transformers')]; "
            "assert not bad, bad; print(time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout.strip()) < 2.0


def test_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("index", "search", "rerank", "evaluate"):
        assert name in result.output


def test_evaluate_bad_run_exit_code_3(tmp_path, toy_beir):
    bad = tmp_path / "bad.trec"
    bad.write_text("q3 Q0 d3 1 1.0 tag\nq3 Q0 d4 2\n")
    result = CliRunner().invoke(cli, ["evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--run", str(bad)])
    assert result.exit_code == 3
    assert f"{bad}:2:" in result.output


def test_evaluate_json(tmp_path, toy_beir):
    run = tmp_path / "run.trec"
    run.write_text("q3 Q0 d3 1 2.0 t\nq3 Q0 d1 2 1.0 t\nq4 Q0 d1 1 3.0 t\nq4 Q0 d4 2 2.0 t\n")
    result = CliRunner().invoke(cli, ["evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--run", str(run),
                                      "--json", "-m", "hit@10", "-m", "mrr@10"])
    assert result.exit_code == 0, result.output
    import json

    values = json.loads(result.output)
    # q2 is judged but absent from the run: trec_eval -c counts it as 0.
    assert values == {"hit@10": round(2 / 3, 4), "mrr@10": round((1 + 0.5) / 3, 4)}


def test_unknown_dataset_exit_code_3(monkeypatch, tmp_path):
    monkeypatch.setenv("PYSERINI_QPEFT_DATA", str(tmp_path))
    result = CliRunner().invoke(cli, ["evaluate", "--qrels", "beir-v1.0.0-nosuchset-test", "--run", "x.trec"])
    assert result.exit_code == 3
    assert "nosuchset" in result.output
