"""`train qpeft --sweep`: every combination trained on the same train/dev queries, the dev-best one published."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pyserini_qpeft.errors import InputError
from pyserini_qpeft.qpeft.config import QPeftConfig
from pyserini_qpeft.qpeft.step import QPeftTrainConfig
from pyserini_qpeft.qpeft.sweep import load_grid
from pyserini_qpeft.types import Hit, Run


def test_grid_expansion_and_refusals(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("margin: [0.2, 1.0]\npointwise-weight: [1.0, 0.1]\ntoken_filter: content\n")
    points = load_grid(grid, QPeftConfig, QPeftTrainConfig)
    assert [p.settings for p in points] == [
        {"token_filter": "content", "margin": 0.2, "pointwise_weight": 1.0},
        {"token_filter": "content", "margin": 0.2, "pointwise_weight": 0.1},
        {"token_filter": "content", "margin": 1.0, "pointwise_weight": 1.0},
        {"token_filter": "content", "margin": 1.0, "pointwise_weight": 0.1}]
    assert points[0].module == {"token_filter": "content"} and points[0].train == {"margin": 0.2, "pointwise_weight": 1.0}
    assert len({p.name for p in points}) == 4
    from pyserini_qpeft.qpeft.sweep import check_selection

    check_selection(points, "ndcg@10", grid)  # a ranking metric compares any points
    with pytest.raises(InputError, match="cannot compare points with different margin, pointwise_weight"):
        check_selection(points, "loss", grid)  # each point's dev loss is its own loss
    check_selection([p for p in points if p.settings["margin"] == 0.2 and p.settings["pointwise_weight"] == 1.0],
                    "loss", grid)
    for loss_setting in ("temperature: [0.5, 1.0]\n", "first_stage_weight: [0.0, 0.5]\n", "loss: [hinge, listwise]\n"):
        grid.write_text(loss_setting)
        with pytest.raises(InputError, match="cannot compare points with different " + loss_setting.split(":")[0]):
            check_selection(load_grid(grid, QPeftConfig, QPeftTrainConfig), "loss", grid)
    # YAML 1.1 reads 1e-3 as text: a number setting takes it as the number (it crashed when the point's turn came)
    grid.write_text("lr: [1e-3, 1.0e-2]\ntop-k: ['8']\n")
    assert [p.settings for p in load_grid(grid, QPeftConfig, QPeftTrainConfig)] == [
        {"top_k": 8, "lr": 0.001}, {"top_k": 8, "lr": 0.01}]
    for text, message in (("nope: [1]\n", "unknown sweep setting"), ("dev_size: [5, 10]\n", "cannot be swept"),
                          ("variant: [attn, retr]\n", "cannot be swept"), ("- 1\n", "mapping"),
                          ("selection_metric: [loss, ndcg@10]\n", "cannot be swept"),
                          ("top_k: [4, 8]\ntop-k: [16]\n", "'top-k' is named twice \\(also as 'top_k'\\)"),
                          ("lr: [fast]\n", "'lr': 'fast' is not a number"), ("lr: [null]\n", "'lr': null"),
                          ("top_k: [2.5]\n", "'top_k': 2.5 is not a number of type int"),
                          ("query_proj: [1]\n", "'query_proj': 1 is not a bool"),
                          ("token_filter: [3]\n", "'token_filter': 3 is not text")):
        grid.write_text(text)
        with pytest.raises(InputError, match=message):
            load_grid(grid, QPeftConfig, QPeftTrainConfig)


def test_cli_sweep_publishes_the_dev_best(tiny_lm_path, tmp_path, toy_beir):
    from pyserini_qpeft.cli.train import train as train_group

    docs = ["d1", "d2", "d3", "d4", "d5", "d6"]
    Run({q: [Hit(d, 6.0 - i) for i, d in enumerate(docs[k:] + docs[:k])] for k, q in enumerate(["q1", "q2"])}
        ).write(tmp_path / "run.trec")
    grid = tmp_path / "grid.yaml"
    grid.write_text("margin: [0.1, 1.0]\nlr: [1.0e-3, 1.0e-2]\n")
    out = tmp_path / "ckpt"
    args = ["qpeft", "--variant", "retr", "--dataset", str(toy_beir), "--negatives", str(tmp_path / "run.trec"),
            "--output", str(out), "--epochs", "1", "--batch-size", "1", "--dev-size", "1", "--top-k", "3",
            "--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "--quiet", "--sweep", str(grid)]
    result = CliRunner().invoke(train_group, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "sweep.json").read_text())
    assert len(summary["rows"]) == 4 and summary["metric"] == "ndcg@10"
    best = max(summary["rows"], key=lambda r: (r["dev"]["ndcg@10"], -r["index"]))
    assert summary["best"]["index"] == best["index"]
    meta = json.loads((out / "best" / "qpeft_config.json").read_text())
    assert meta["sweep"] == best["settings"]  # best/ is the winner's checkpoint
    dev_sets = {tuple(json.loads((tmp_path / r["folder"] / "best" / "qpeft_config.json").read_text())
                      ["training"]["dev_qids"]) for r in summary["rows"]}
    assert len(dev_sets) == 1  # one dev set for every combination
    table = (out / "sweep.md").read_text()
    assert "| * |" in table and "| --margin 0.1, --lr 0.001 |" in table  # settings as the flags that set them
    again = CliRunner().invoke(train_group, args)  # resumes: nothing is trained again, the same winner
    assert again.exit_code == 0, again.output
    assert json.loads((out / "sweep.json").read_text())["best"]["index"] == best["index"]
    # stopped before its table (killed, Ctrl-C): the same command resumes it (it was refused as a foreign folder);
    # a combination whose folder is gone trains again, the others are reused
    import shutil

    kept = out / "sweep" / summary["rows"][0]["name"] / "best" / "qpeft_model.safetensors"
    first = kept.read_bytes()
    for name in ("sweep.json", "sweep.md"):
        (out / name).unlink()
    shutil.rmtree(out / "best")
    shutil.rmtree(out / "sweep" / summary["rows"][-1]["name"])
    resumed = CliRunner().invoke(train_group, args)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "sweep.json").read_text())["rows"] == summary["rows"]
    assert kept.read_bytes() == first  # reused, not retrained
    for name in ("sweep.json", "sweep.md"):
        (out / name).rename(tmp_path / name)
    shutil.rmtree(out / "best")
    refused = CliRunner().invoke(train_group, [a for a in args if a not in ("--sweep", str(grid))])
    assert isinstance(refused.exception, InputError) and "holds an unfinished sweep" in str(refused.exception)
    resumed = CliRunner().invoke(train_group, args)
    assert resumed.exit_code == 0, resumed.output
    # a plain training never writes into a sweep's folder (it would replace best/), nor a sweep into a training's
    plain = [a for a in args if a not in ("--sweep", str(grid))]
    refused = CliRunner().invoke(train_group, plain)
    assert isinstance(refused.exception, InputError) and "holds a sweep" in str(refused.exception)
    assert json.loads((out / "best" / "qpeft_config.json").read_text())["sweep"] == best["settings"]
    single = tmp_path / "single"
    ok = CliRunner().invoke(train_group, [*plain[:plain.index("--output") + 1], str(single),
                                          *plain[plain.index("--output") + 2:]])
    assert ok.exit_code == 0, ok.output
    refused = CliRunner().invoke(train_group, [*args[:args.index("--output") + 1], str(single),
                                               *args[args.index("--output") + 2:]])
    assert isinstance(refused.exception, InputError) and "not a sweep" in str(refused.exception)
    # a point with its own seed holds out the base seed's dev queries, and records that carve (so it resumes)
    grid.write_text("seed: [1]\n")
    seeded = tmp_path / "seeded"
    done = CliRunner().invoke(train_group, [*args[:args.index("--output") + 1], str(seeded),
                                            *args[args.index("--output") + 2:]])
    assert done.exit_code == 0, done.output
    training = json.loads((seeded / "best" / "qpeft_config.json").read_text())["training"]
    assert training["train_config"]["seed"] == 1 and training["train_config"]["dev_seed"] == 0
    assert tuple(training["dev_qids"]) in dev_sets
    # every combination's settings are checked before the first training: a bad last value trains nothing
    grid.write_text("loss: [hinge, listwise]\nfirst_stage_weight: [0.0, 0.3]\n")
    late = tmp_path / "late"
    refused = CliRunner().invoke(train_group, [*args[:args.index("--output") + 1], str(late),
                                               *args[args.index("--output") + 2:]])
    assert isinstance(refused.exception, InputError)  # exit 3 through the CLI
    assert "combination 03-loss=listwise_first-stage-weight=0.3: first_stage_weight needs the hinge loss" in \
        str(refused.exception) and str(grid) in str(refused.exception)
    assert not (late / "sweep").exists()
    # a module this LM cannot take (heads that do not divide its hidden size 32): exit 2, not a traceback
    heads = [a if a != "retr" else "attn" for a in plain] + ["--num-heads", "5"]
    refused = CliRunner().invoke(train_group, [*heads[:heads.index("--output") + 1], str(tmp_path / "heads"),
                                               *heads[heads.index("--output") + 2:]])
    from pyserini_qpeft.errors import UsageError

    assert isinstance(refused.exception, UsageError) and refused.exception.exit_code == 2  # exit 2 through the CLI
    assert "num_heads=5 does not divide hidden size 32" in str(refused.exception)


def test_sweep_is_finished_only_after_on_finish(tmp_path, caplog):
    """The interpolation weight is selected (``on_finish``) on the published best/ before sweep.json marks the sweep
    finished: a sweep stopped in between (a first run or a rerun) is warned about and resumed by the same command
    (audit V: the folder check refused it)."""
    import logging
    from types import SimpleNamespace

    from pyserini_qpeft.qpeft.sweep import SweepPoint, run_sweep
    from pyserini_qpeft.training.state import DONE_NAME, STATE_NAME, check_training_output, warn_if_unfinished

    def train_one(point, folder):  # what a finished combination leaves
        (folder / "best").mkdir(parents=True, exist_ok=True)
        (folder / "best" / "weights.txt").write_text(str(point.index))
        (folder / STATE_NAME).write_text("{}")
        (folder / DONE_NAME).write_text("{}")
        return SimpleNamespace(best_dev={"ndcg@10": 0.1 * (point.index + 1)}, best_epoch=1, best_step=None)

    points = [SweepPoint(index=i, module={}, train={"margin": m}) for i, m in enumerate((0.1, 0.5))]
    out = tmp_path / "sweep-out"

    def stop(best):
        raise KeyboardInterrupt

    for attempt in ("first run", "rerun of a finished sweep"):
        with pytest.raises(KeyboardInterrupt):
            run_sweep(points, train_one, out, "ndcg@10", on_finish=stop)
        assert (out / "best" / "weights.txt").read_text() == "1" and not (out / "sweep.json").exists(), attempt
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            warn_if_unfinished(out / "best")
        assert "its sweep has not finished (no sweep.json" in caplog.text, attempt
        check_training_output(out, sweep=True)  # the same `train ... --sweep` resumes it
        with pytest.raises(InputError, match="unfinished sweep"):
            check_training_output(out)  # a plain training would mix with it
        seen = []
        summary = run_sweep(points, train_one, out, "ndcg@10", on_finish=seen.append)
        assert seen == [out / "best"] and summary["best"]["index"] == 1 and (out / "sweep.json").is_file()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            warn_if_unfinished(out / "best")
            warn_if_unfinished(out)
        assert caplog.text == "", attempt


def test_a_sweep_selected_by_dev_loss_keeps_the_lowest_and_its_table_has_only_metrics(tmp_path):
    from types import SimpleNamespace

    from pyserini_qpeft.qpeft.sweep import SweepPoint, run_sweep
    from pyserini_qpeft.training.state import DONE_NAME, STATE_NAME

    losses = {0: 0.3, 1: 0.1, 2: 0.2}

    def train_one(point, folder):
        (folder / "best").mkdir(parents=True, exist_ok=True)
        (folder / STATE_NAME).write_text("{}")
        (folder / DONE_NAME).write_text("{}")
        return SimpleNamespace(best_dev={"loss": losses[point.index], "ndcg@10": 0.5, "queries": 4}, best_epoch=1,
                               best_step=None)

    points = [SweepPoint(index=i, module={}, train={"lr": lr}) for i, lr in enumerate((1e-3, 1e-2, 3e-2))]
    summary = run_sweep(points, train_one, tmp_path / "out", "loss")
    assert summary["best"]["index"] == 1  # the lowest dev loss
    assert summary["rows"][0]["dev"] == {"loss": 0.3, "ndcg@10": 0.5}  # the dev query count is no metric column
    assert "dev queries" not in (tmp_path / "out" / "sweep.md").read_text()
