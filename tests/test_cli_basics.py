"""The CLI imports no torch/Pyserini/Java on import or --help, and maps bad input to documented exit codes."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pyserini_qpeft.cli.main import cli


HEAVY = ("torch", "transformers", "pyserini", "jnius", "faiss")


def modules_after(code: str) -> list[str]:
    """Top-level packages among HEAVY that are imported after running ``code`` in a fresh interpreter."""
    probe = code + f"\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return eval(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import pyserini_qpeft",
    "import pyserini_qpeft.cli.main",
    # `pyserini-qpeft --help`: the console script runs this group
    "from pyserini_qpeft.cli.main import cli\ntry:\n    cli(['--help'], prog_name='pyserini-qpeft')\n"
    "except SystemExit as exc:\n    assert exc.code == 0, exc.code",
    # the registry and the shared flags are consulted by `rerank --help`; neither loads a model
    "from pyserini_qpeft.rerank import reranker_names, build_reranker\nreranker_names()\nbuild_reranker('identity')",
    "from pyserini_qpeft.cli.main import cli\ntry:\n    cli(['rerank', '--help'])\nexcept SystemExit as exc:\n"
    "    assert exc.code == 0, exc.code",
])
def test_import_and_help_load_no_torch_pyserini_or_java(code):
    assert modules_after(code) == []


def test_probe_detects_heavy_imports():
    """The check above can fail: importing the module that needs torch is seen."""
    assert "torch" in modules_after("import pyserini_qpeft.qpeft.module")


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

    values = json.loads(result.stdout)
    # q2 is judged but absent from the run: trec_eval -c counts it as 0, and a run holding under 90 % of the judged
    # queries is warned about (audit Z: a sampled run evaluated without its sample scored 0.015, silently)
    assert values == {"hit@10": round(2 / 3, 4), "mrr@10": round((1 + 0.5) / 3, 4)}
    assert "warning: the run holds 2 of the 3 judged queries" in result.stderr and "--sample-queries" in result.stderr
    full = tmp_path / "full.trec"
    full.write_text(run.read_text() + "q2 Q0 d5 1 1.0 t\n")
    covered = CliRunner().invoke(cli, ["evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--run",
                                       str(full), "--json"])
    assert covered.exit_code == 0 and covered.stderr == "", covered.output
    for bad in ("foo", "ndcg@0", "ndcg@10,foo"):  # a bad value is a usage error (exit 2), as the README's table says
        refused = CliRunner().invoke(cli, ["evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--run",
                                           str(full), "-m", bad])
        assert refused.exit_code == 2 and "--metric" in refused.output, (bad, refused.output)
    # comma-separated, and trec_eval's cutoff lists (P.1,2 = P.1 and P.2): the same values under the names given
    listed = CliRunner().invoke(cli, ["evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--run", str(run),
                                      "--json", "-m", "hit@10,mrr@10", "-m", "P.1,2"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == {**values, "P.1": round(1 / 3, 4), "P.2": round((0.5 + 0.5) / 3, 4)}
    other = tmp_path / "other.trec"  # a run of queries the qrels do not judge (e.g. the training split's run)
    other.write_text("q9 Q0 d1 1 1.0 t\n")
    result = CliRunner().invoke(cli, ["evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--run", str(other),
                                      "-m", "ndcg@10"])
    assert result.exit_code == 0 and "warning: none of the 3 judged queries" in result.output, result.output


def test_evaluate_seen_qrels_splits_queries_by_documents_relevant_in_other_qrels(tmp_path, toy_beir):
    """--seen-qrels: 'seen' = test queries with a relevant document that is relevant in the other qrels (a judgment
    of 0 there does not count), 'unseen' = the rest; each group is evaluated like the whole (missing = 0)."""
    import json

    run = tmp_path / "run.trec"
    run.write_text("q3 Q0 d3 1 2.0 t\nq4 Q0 d4 1 3.0 t\nq2 Q0 d1 1 1.0 t\n")  # hit@1: q3 yes, q4 yes, q2 no
    seen = tmp_path / "seen.trec"
    seen.write_text("q9 0 d3 1\nq9 0 d4 0\n")
    args = ["evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--run", str(run), "-m", "hit@1",
            "--seen-qrels", str(seen)]
    result = CliRunner().invoke(cli, args + ["--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"all": {"hit@1": round(2 / 3, 4)}, "seen": {"hit@1": 1.0, "queries": 1},
                                         "unseen": {"hit@1": 0.5, "queries": 2}}
    table = CliRunner().invoke(cli, args).output.splitlines()
    assert table == ["hit@1         all             0.6667", "hit@1         seen(1)         1.0000",
                     "hit@1         unseen(2)       0.5000"]


def test_evaluate_dev_run_against_its_training_qrels_splits_by_the_other_training_queries(tmp_path):
    """--only-run-queries scores only the run's judged queries (a dev run against the whole training split's qrels),
    and --seen-qrels ignores a query's own judgments: qa is seen (qb, a training query, shares d1), qc is unseen
    (only qc itself judges d3)."""
    import json

    qrels = tmp_path / "train.trec"
    qrels.write_text("qa 0 d1 1\nqb 0 d1 1\nqc 0 d3 1\n")
    run = tmp_path / "dev.trec"
    run.write_text("qa Q0 d1 1 2.0 t\nqc Q0 d2 1 1.0 t\n")  # hit@1: qa yes, qc no
    args = ["evaluate", "--qrels", str(qrels), "--run", str(run), "-m", "hit@1", "--json"]
    every = CliRunner().invoke(cli, args)
    assert json.loads(every.stdout) == {"hit@1": round(1 / 3, 4)}  # qb judged, not in the run: 0 (trec_eval -c)
    dev = CliRunner().invoke(cli, args + ["--only-run-queries", "--seen-qrels", str(qrels)])
    assert dev.exit_code == 0, dev.output
    assert json.loads(dev.output) == {"all": {"hit@1": 0.5}, "seen": {"hit@1": 1.0, "queries": 1},
                                      "unseen": {"hit@1": 0.0, "queries": 1}}
    other = tmp_path / "other.trec"
    other.write_text("qz Q0 d1 1 1.0 t\n")
    refused = CliRunner().invoke(cli, ["evaluate", "--qrels", str(qrels), "--run", str(other), "--only-run-queries"])
    assert refused.exit_code == 3 and "none of the run's 1 queries is judged" in refused.output


def test_evaluate_sample_queries_judges_the_sample_search_draws(tmp_path, toy_beir):
    import json

    from pyserini_qpeft.data import BeirDataset, sample_topics

    run = tmp_path / "run.trec"
    run.write_text("q3 Q0 d3 1 2.0 t\nq4 Q0 d1 1 3.0 t\nq2 Q0 d5 1 1.0 t\n")  # hit@1: q3 yes, q4 no, q2 yes
    sample = [q.qid for q in sample_topics(BeirDataset(toy_beir).topics("test"), 2, 5)]
    result = CliRunner().invoke(cli, ["evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--run", str(run),
                                      "--json", "-m", "hit@1", "--sample-queries", "2", "--sample-seed", "5"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"hit@1": round(sum(q != "q4" for q in sample) / 2, 4)}


def test_unknown_dataset_exit_code_3(monkeypatch, tmp_path):
    monkeypatch.setenv("PYSERINI_QPEFT_DATA", str(tmp_path))
    result = CliRunner().invoke(cli, ["evaluate", "--qrels", "beir-v1.0.0-nosuchset-test", "--run", "x.trec"])
    assert result.exit_code == 3
    assert "nosuchset" in result.output


# Programs (``python -m ...``) may start the CLI; everything else is library code.
PROGRAMS = {"__main__.py", "demo.py"}


def cli_imports(path: Path, package: tuple[str, ...]) -> list[str]:
    """Import statements of ``path`` that reach ``pyserini_qpeft.cli``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            targets = [module] if node.module else [module + [alias.name] for alias in node.names]
        else:
            continue
        found += [".".join(t) for t in targets if t[:2] == ["pyserini_qpeft", "cli"]]
    return found


def test_library_never_imports_the_cli(tmp_path):
    import pyserini_qpeft

    root = Path(pyserini_qpeft.__file__).parent
    offenders = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "cli" or str(rel) in PROGRAMS:
            continue
        package = ("pyserini_qpeft", *rel.parts[:-1])
        if found := cli_imports(path, package):
            offenders[str(rel)] = found
    assert offenders == {}
    # the checker itself sees both spellings
    probe = root / "repro" / "runner.py"
    assert cli_imports(probe, ("pyserini_qpeft", "repro")) == []
    fake = tmp_path / "probe.py"
    fake.write_text("from ..cli.main import cli\nimport pyserini_qpeft.cli.options\nfrom .. import cli\n")
    assert cli_imports(fake, ("pyserini_qpeft", "repro")) == ["pyserini_qpeft.cli.main", "pyserini_qpeft.cli.options",
                                                              "pyserini_qpeft.cli"]


def test_reranking_flags_have_one_definition_for_both_front_ends(monkeypatch):
    """`pyserini-qpeft search|rerank` and `python -m pyserini_qpeft.search` parse the same reranking flags."""
    import argparse

    from pyserini_qpeft.cli.rerank import rerank
    from pyserini_qpeft.cli.search import search
    from pyserini_qpeft.lm.backbone import DTYPES
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.rerank import reranker_names
    from pyserini_qpeft.search.compat import add_reranker_args

    monkeypatch.setenv("COLUMNS", "10000")  # argparse wraps help at hyphens otherwise
    parser = argparse.ArgumentParser()
    add_reranker_args(parser)
    defaults = vars(parser.parse_args([]))
    compat_help = " ".join(parser.format_help().split())
    for command in (search, rerank):
        options = {param.opts[0]: param for param in command.params if isinstance(param, click.Option)}
        for flag in ("--reranker", "--reranker-checkpoint", "--rerank-depth", "--max-passage-tokens",
                     "--max-query-tokens", "--prompt"):
            assert options[flag].default == defaults[options[flag].name], flag
            assert " ".join(options[flag].help.split()) in compat_help, flag
        for name, choices in (("dtype", DTYPES),):
            assert tuple(options[f"--{name}"].type.choices) == choices
            assert options[f"--{name}"].default == defaults[f"reranker_{name}"]
            assert "{" + ",".join(choices) + "}" in compat_help
        assert options["--device"].default == defaults["reranker_device"] == "auto"
        assert options["--device"].type.convert("CUDA:1", None, None) == "cuda:1"
        assert "cuda:N" in options["--device"].help and "cuda:N" in compat_help
        assert tuple(options["--reranker"].type.choices) == tuple(reranker_names())  # unknown name: exit 2
        assert "{" + ",".join(reranker_names()) + "}" in compat_help
        assert str(ScorerConfig().max_passage_tokens) in options["--max-passage-tokens"].help
        assert str(ScorerConfig().max_query_tokens) in options["--max-query-tokens"].help
        assert str(ScorerConfig().batch_size) in options["--batch-size-rerank"].help
    ours, rest = parser.parse_known_args(["--rerank-depth", "7", "--topics", "t"])
    assert ours.rerank_depth == 7 and rest == ["--topics", "t"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--rerank-depth", "0"])


def test_shared_option_decorators_take_their_sources():
    """`scorer_option` defaults to ScorerConfig's; `device_option` / `dtype_option` to LMConfig's (and `encode`,
    `encode-queries` take theirs from them)."""
    from pyserini_qpeft.cli.encode import encode
    from pyserini_qpeft.cli.encode_queries import encode_queries
    from pyserini_qpeft.cli.options import device_option, dtype_option, scorer_option
    from pyserini_qpeft.lm.backbone import DTYPES
    from pyserini_qpeft.lm.scoring import ScorerConfig

    @click.command()
    @scorer_option("max_passage_tokens", type=click.IntRange(min=8))
    @device_option
    @dtype_option
    def show(max_passage_tokens, device, dtype):
        click.echo(f"{max_passage_tokens} {device} {dtype}")

    assert CliRunner().invoke(show, []).output == f"{ScorerConfig().max_passage_tokens} auto auto\n"
    assert CliRunner().invoke(show, ["--dtype", "bf16"]).output.split()[2] == "bf16"
    bad = CliRunner().invoke(show, ["--dtype", "fp8"])
    assert bad.exit_code == 2 and "'bf16'" in bad.output
    for command in (encode, encode_queries):
        (dtype,) = [p for p in command.params if p.name == "dtype"]
        assert tuple(dtype.type.choices) == tuple(DTYPES) and dtype.default == "auto"


def test_device_accepts_cuda_index_and_refuses_the_rest():
    """``--device cuda:N`` selects one GPU; a typo is a usage error (exit 2) and a missing GPU a model error."""
    from pyserini_qpeft.errors import ModelError
    from pyserini_qpeft.lm.backbone import LMConfig, device_spec, resolve_device

    assert [device_spec(v) for v in ("auto", "CPU", "cuda", "cuda:3")] == ["auto", "cpu", "cuda", "cuda:3"]
    for bad in ("gpu", "cuda:", "cuda:x", "cuda1", ""):
        with pytest.raises(ValueError):
            device_spec(bad)
    with pytest.raises(ValueError):
        LMConfig(device="tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            resolve_device("cuda:1")
        assert resolve_device("auto") == "cpu"
    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli

    result = CliRunner().invoke(cli, ["rerank", "--device", "gpu", "--run", "x", "--topics", "t", "--output", "o"])
    assert result.exit_code == 2 and "cuda:N" in result.output


def test_evaluate_compare_to_a_baseline_run(tmp_path, toy_beir):
    """--compare-to: per metric the mean difference over the judged queries, improved / hurt / tied and the paired
    randomization test's p; a run against itself is never significant."""
    import json

    run = tmp_path / "run.trec"
    run.write_text("q3 Q0 d3 1 2.0 t\nq4 Q0 d4 1 3.0 t\nq2 Q0 d1 1 1.0 t\n")  # hit@1: q3 yes, q4 yes, q2 no
    base = tmp_path / "base.trec"
    base.write_text("q3 Q0 d1 1 2.0 t\nq4 Q0 d4 1 3.0 t\n")  # hit@1: q3 no, q4 yes, q2 missing (0)
    args = ["evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--run", str(run), "-m", "hit@1"]
    out = CliRunner().invoke(cli, args + ["--compare-to", str(base), "--json"])
    assert out.exit_code == 0, out.output
    # differences +1 (q3), 0, 0: every sign flip reaches |1/3|, so p = 1 -- one query cannot be significant
    assert json.loads(out.output) == {"all": {"hit@1": round(2 / 3, 4)}, "compare_to": {
        "run": str(base), "hit@1": {"delta": round(1 / 3, 4), "p": 1.0, "queries": 3, "trials": 10000,
                                    "improved": 1, "hurt": 0, "tied": 2}}}
    table = CliRunner().invoke(cli, args + ["--compare-to", str(run)]).output.splitlines()
    assert table[-1] == ("hit@1         vs-baseline     +0.0000  improved 0 / hurt 0 / tied 3  p = 1.0000 "
                         "(paired randomization, 10,000 sign flips)")


def test_evaluate_averages_repeated_runs_per_query(tmp_path, toy_beir):
    """--run / --compare-to repeated (one system over seeds): each query's value is the runs' mean, the reported mean
    is the mean of the runs' means, and the comparison is between the two seed-averaged systems, query by query."""
    import json

    seed0 = tmp_path / "s0.trec"
    seed0.write_text("q3 Q0 d3 1 2.0 t\nq4 Q0 d4 1 3.0 t\nq2 Q0 d1 1 1.0 t\n")  # hit@1: q3 1, q4 1, q2 0
    seed1 = tmp_path / "s1.trec"
    seed1.write_text("q3 Q0 d1 1 2.0 t\nq4 Q0 d4 1 3.0 t\nq2 Q0 d1 1 1.0 t\n")  # hit@1: q3 0, q4 1, q2 0
    base = tmp_path / "base.trec"
    base.write_text("q3 Q0 d1 1 2.0 t\nq4 Q0 d4 1 3.0 t\n")  # hit@1: q3 0, q4 1, q2 missing (0)
    args = ["evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "-m", "hit@1", "--json"]
    out = CliRunner().invoke(cli, args + ["--run", str(seed0), "--run", str(seed1), "--per-query",
                                          "--compare-to", str(base), "--compare-to", str(base)])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert got["all"] == {"hit@1": 0.5} and got["averaged_over"] == [str(seed0), str(seed1)]
    assert {q: v["hit@1"] for q, v in got["per_query"].items()} == {"q2": 0.0, "q3": 0.5, "q4": 1.0}
    assert got["compare_to"] == {"runs": [str(base), str(base)], "hit@1": {
        "delta": round(0.5 / 3, 4), "p": 1.0, "queries": 3, "trials": 10000, "improved": 1, "hurt": 0, "tied": 2}}
    single = [json.loads(CliRunner().invoke(cli, args + ["--run", str(s)]).output)["hit@1"] for s in (seed0, seed1)]
    assert got["all"]["hit@1"] == round(sum(single) / 2, 4)
    unjudged = tmp_path / "q1.trec"
    unjudged.write_text("q1 Q0 d1 1 1.0 t\n")  # q1 is a training query: not judged in the test qrels
    out = CliRunner().invoke(cli, args + ["--run", str(unjudged), "--run", str(unjudged), "--only-run-queries"])
    assert out.exit_code == 3 and "none of the runs' 1 queries is judged" in out.output


def test_the_jvm_pass_through_runs_only_pyserini_modules(capsys):
    """`python -m pyserini_qpeft.jvm pyserini.<module> ...` (Pyserini's own commands on our JVM): anything else is a
    usage error before a JVM starts (the Pyserini run itself: tests/test_encode.py)."""
    from pyserini_qpeft.jvm import main

    for argv in ([], ["os"], ["--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2 and "usage: python -m pyserini_qpeft.jvm pyserini.<module>" in capsys.readouterr().err


def test_search_defaults_are_pyserinis():
    """`search --bm25` as Pyserini's BEIR flat runs: k1 0.9, b 0.4, 1000 hits (mutant audit W: L3 set 100 hits)."""
    from pyserini_qpeft.search import BM25Config

    assert (BM25Config().k1, BM25Config().b, BM25Config().hits) == (0.9, 0.4, 1000)
    import click

    defaults = {p.name: p.default for p in cli.get_command(click.Context(cli), "search").params}
    assert (defaults["k1"], defaults["b"], defaults["hits"]) == (0.9, 0.4, 1000)
    # the rerank depth as the papers' (top-100), in `rerank` and in `search --reranker` (mutant audit W: K1)
    for command in ("rerank", "search"):
        params = {p.name: p.default for p in cli.get_command(click.Context(cli), command).params}
        assert params["rerank_depth"] == 100, command
