"""The shared training loop on a toy step (no LM): early stopping, LR schedules, selection without dev, resume,
optimizer state without pickle, config validation."""
from __future__ import annotations

import json

import pytest
import torch

from pyserini_qpeft.errors import InputError
from pyserini_qpeft.training.config import TrainConfig
from pyserini_qpeft.training.data import TrainingExample
from pyserini_qpeft.training.state import load_optimizer, read_trainer_state, save_optimizer
from pyserini_qpeft.training.trainer import epoch_order, fit
from pyserini_qpeft.types import Hit, Run

EXAMPLES = [TrainingExample(f"q{i}", f"query {i}", (f"p{i}",), (f"n{i}",)) for i in range(10)]


class ToyStep:
    """A scalar ``w`` per example; the loss pulls every ``w`` towards 1. Dev: ``p`` scores ``w`` against ``n`` at
    a fixed ``dev_score`` sequence (to script the dev metric)."""

    dev_metrics = ("mrr@10",)

    def __init__(self, dev_scores=None):
        self.w = torch.nn.Parameter(torch.zeros(len(EXAMPLES)))
        self.identity = {"toy": 1}
        self.dev_scores = list(dev_scores or [])
        self.seen: list[list[str]] = []
        self.lrs: list[float] = []
        self.epochs: list[int] = []

    def parameters(self):
        return [self.w]

    def train_mode(self, training):
        pass

    def begin_epoch(self, epoch):
        self.epochs.append(epoch)

    def step(self, batch, rng):
        self.seen.append([e.qid for e in batch])
        idx = torch.tensor([int(e.qid[1:]) for e in batch])
        rng.random()  # a real step samples from the loop's seeded rng
        loss = ((self.w[idx] - 1.0) ** 2).mean()
        return loss, {"loss": float(loss.detach())}

    def dev_run(self, dev, progress=False):
        score = self.dev_scores.pop(0) if self.dev_scores else 0.0
        return Run({e.qid: [Hit(e.positives[0], score), Hit(e.negatives[0], 0.5)] for e in dev})

    def baseline_run(self, dev, progress=False):
        return None

    def dev_extra(self, dev, run):
        return {}

    def save(self, folder, extra):
        folder.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        save_file({"w": self.w.detach().clone()}, str(folder / "w.safetensors"))
        (folder / "meta.json").write_text(json.dumps(extra))

    def load(self, folder):
        from safetensors.torch import load_file

        with torch.no_grad():
            self.w.copy_(load_file(str(folder / "w.safetensors"))["w"])


def test_patience_stops_early_and_resume_keeps_the_stop(tmp_path):
    # dev MRR per epoch: 1, 0.5, 0.5, 0.5, ... -> best is epoch 1; patience 2 stops before epoch 4
    step = ToyStep([1.0, 0.0, 0.0, 0.0, 0.0])
    config = TrainConfig(epochs=6, batch_size=4, patience=2, eval_at_start=False, selection_metric="mrr@10")
    result = fit(step, EXAMPLES[:8], EXAMPLES[8:], config, tmp_path / "out", progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and result.stopped_early and result.best_epoch == 1
    assert json.loads((tmp_path / "out" / "best" / "meta.json").read_text())["training"]["epoch"] == 1
    assert step.epochs == [1, 2, 3]  # begin_epoch before each epoch's steps
    again = fit(ToyStep(), EXAMPLES[:8], EXAMPLES[8:], config, tmp_path / "out", resume=True, progress=False)
    assert len(again.history) == 3 and again.stopped_early
    # default: no early stopping
    plain = fit(ToyStep([1.0]), EXAMPLES[:8], EXAMPLES[8:], TrainConfig(epochs=4, batch_size=4, eval_at_start=False),
                tmp_path / "plain", progress=False)
    assert len(plain.history) == 4 and not plain.stopped_early


def test_without_dev_the_lowest_training_loss_wins(tmp_path):
    step = ToyStep()
    config = TrainConfig(epochs=3, batch_size=5, lr=0.1, warmup_steps=0, dev_size=0)
    result = fit(step, EXAMPLES, [], config, tmp_path / "out", progress=False)
    losses = [h["train"]["loss"] for h in result.history]
    assert losses == sorted(losses, reverse=True) and result.best_epoch == 3
    assert all(h["dev"] == {} for h in result.history)


@pytest.mark.parametrize("kind", ["constant", "linear"])
def test_lr_schedules(kind):
    if kind == "constant":
        config = TrainConfig(lr=1.0, warmup_steps=4)
        assert [config.lr_at(s, 20) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    else:
        config = TrainConfig(lr=1.0, lr_schedule="linear", warmup_steps=0, warmup_ratio=0.2)
        lrs = [config.lr_at(s, 10) for s in range(10)]
        assert lrs[:2] == [0.5, 1.0] and lrs[2] == 1.0 and lrs[-1] == pytest.approx(1 / 8)
        assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert TrainConfig(epochs=3, batch_size=4, max_train_queries=6).planned_steps(10) == 6
    assert TrainConfig(epochs=3, batch_size=4, max_steps=5).planned_steps(10) == 5


def test_epoch_order_is_seeded_per_epoch():
    config = TrainConfig(seed=3, max_train_queries=4)
    assert epoch_order(10, config, 1) == epoch_order(10, config, 1)
    assert epoch_order(10, config, 1) != epoch_order(10, config, 2) and len(epoch_order(10, config, 2)) == 4
    # and on the seed: another --seed, other orders (mutant audit U: T07)
    other = TrainConfig(seed=4, max_train_queries=4)
    assert [epoch_order(10, other, e) for e in (1, 2, 3)] != [epoch_order(10, config, e) for e in (1, 2, 3)]


def test_optimizer_roundtrip_is_exact_and_pickle_free(tmp_path):
    w = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.01)
    for _ in range(2):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    save_optimizer(opt, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer.json", "optimizer.safetensors"]
    other = torch.optim.AdamW([torch.nn.Parameter(w.detach().clone())], lr=0.5)
    load_optimizer(other, tmp_path)
    a, b = opt.state_dict(), other.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for key, value in a["state"][0].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][0][key])), key


def test_fit_refuses_overlap_and_a_finished_folder(tmp_path):
    with pytest.raises(InputError, match="both in train and dev"):
        fit(ToyStep(), EXAMPLES[:5], EXAMPLES[4:6], TrainConfig(epochs=1), tmp_path / "x", progress=False)
    fit(ToyStep(), EXAMPLES[:8], EXAMPLES[8:], TrainConfig(epochs=1, eval_at_start=False), tmp_path / "y",
        progress=False)
    assert read_trainer_state(tmp_path / "y")["completed_epochs"] == 1
    with pytest.raises(InputError, match="--resume"):
        fit(ToyStep(), EXAMPLES[:8], EXAMPLES[8:], TrainConfig(epochs=1), tmp_path / "y", progress=False)
    step = ToyStep()
    step.identity = {"toy": 2}
    with pytest.raises(InputError, match="other model settings"):
        fit(step, EXAMPLES[:8], EXAMPLES[8:], TrainConfig(epochs=2), tmp_path / "y", resume=True, progress=False)


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": 0.0}, {"lr_schedule": "cosine"}, {"patience": 0},
                                 {"warmup_ratio": 0.1, "warmup_steps": 5}, {"dev_size": 1.5},
                                 {"selection_metric": "bleu"}])
def test_config_validation_names_the_bad_value(bad):
    with pytest.raises(ValueError) as info:
        TrainConfig(**bad)
    assert list(bad)[-1] in str(info.value) or str(list(bad.values())[-1]) in str(info.value)
    with pytest.raises(InputError, match="bad training setting"):
        TrainConfig.build(**bad)


def test_importing_the_training_layer_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, pyserini_qpeft.training.trainer, pyserini_qpeft.qpeft.step, pyserini_qpeft.lmort.train, "
            "pyserini_qpeft.cli.train, pyserini_qpeft.cli.lmort; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class Interrupted(Exception):
    pass


def test_resume_before_the_first_epoch_reuses_the_dev_evaluation_at_start(tmp_path):
    # an uninterrupted run: dev at start, then after each of 2 epochs
    config = TrainConfig(epochs=2, batch_size=4, selection_metric="mrr@10")
    whole = ToyStep([0.2, 1.0, 0.0])
    whole_result = fit(whole, EXAMPLES[:8], EXAMPLES[8:], config, tmp_path / "whole", progress=False)

    class Cut(ToyStep):
        def step(self, batch, rng):
            raise Interrupted  # killed during epoch 1, after the dev evaluation at start

    with pytest.raises(Interrupted):
        fit(Cut([0.2]), EXAMPLES[:8], EXAMPLES[8:], config, tmp_path / "cut", progress=False)
    assert read_trainer_state(tmp_path / "cut")["completed_epochs"] == 0
    resumed = ToyStep([1.0, 0.0, 0.7])
    result = fit(resumed, EXAMPLES[:8], EXAMPLES[8:], config, tmp_path / "cut", resume=True, progress=False)
    assert resumed.dev_scores == [0.7]  # two dev passes (one per epoch), none at start
    assert result.best_epoch == 1 and [h["dev"] for h in result.history] == [h["dev"] for h in whole_result.history]
    states = [read_trainer_state(tmp_path / name) for name in ("whole", "cut")]
    assert states[0]["dev_untrained"] == states[1]["dev_untrained"] == {"mrr@10": 0.5, "queries": 2}
    assert torch.equal(resumed.w, whole.w) and resumed.seen == whole.seen and resumed.epochs == whole.epochs == [1, 2]
    # a resume with another recorded setting is still refused, before any scoring or training
    with pytest.raises(Interrupted):
        fit(Cut([0.2]), EXAMPLES[:8], EXAMPLES[8:], config, tmp_path / "cut2", progress=False)
    changed = TrainConfig(epochs=2, batch_size=4, selection_metric="mrr@10", lr=0.5)
    with pytest.raises(InputError, match="other training settings"):
        fit(ToyStep(), EXAMPLES[:8], EXAMPLES[8:], changed, tmp_path / "cut2", resume=True, progress=False)
    # killed in epoch 1 of a run without the evaluation at start, resumed with it: it has none to reuse, so it
    # evaluates at start now (mutant audit X: tr3 took the recorded configuration alone for "evaluated")
    quiet = TrainConfig(epochs=2, batch_size=4, selection_metric="mrr@10", eval_at_start=False)
    with pytest.raises(Interrupted):
        fit(Cut(), EXAMPLES[:8], EXAMPLES[8:], quiet, tmp_path / "cut3", progress=False)
    later = ToyStep([0.2, 1.0, 0.0])
    fit(later, EXAMPLES[:8], EXAMPLES[8:], config, tmp_path / "cut3", resume=True, progress=False)
    assert later.dev_scores == [] and read_trainer_state(tmp_path / "cut3")["dev_untrained"] == {
        "mrr@10": 0.5, "queries": 2}


def test_a_best_copy_a_killed_run_left_is_ours_and_swept(tmp_path):
    """publish_best copies into a temporary named as every temporary of ours (.best.PID.copy.tmp), so a copy a
    SIGKILL left is swept by the next publish and never makes the folder look foreign to a resume or a sweep."""
    from pyserini_qpeft.training.state import check_training_output, publish_best

    epoch = tmp_path / "out" / "epoch-1"
    epoch.mkdir(parents=True)
    (epoch / "weights.safetensors").write_bytes(b"w")
    dead = 4194300  # above any PID in use here (pid_max is 4194304)
    stale = [tmp_path / "out" / f".best.{dead}.copy.tmp", tmp_path / "out" / f".best.old{dead + 1}"]
    for folder in stale:
        folder.mkdir()
    only = tmp_path / "only"
    only.mkdir()
    (only / f".best.{dead}.copy.tmp").mkdir()
    (only / f".best.old{dead}").mkdir()
    check_training_output(only)  # nothing but our leftovers: not foreign
    best = publish_best(epoch, tmp_path / "out")
    assert (best / "weights.safetensors").read_bytes() == b"w"
    assert not any(folder.exists() for folder in stale)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["best", "epoch-1"]


def test_training_done_is_written_after_on_finish_and_a_killed_finish_is_unfinished(tmp_path, caplog):
    """``training_done.json`` was written before `train qpeft` selected the interpolation weight that best/ carries:
    a kill in that window left a folder marked done without its weight. ``on_finish`` runs before the marker; if it
    fails the folder is unfinished (a warning when something loads it) and --resume runs it again."""
    import logging

    from pyserini_qpeft.training.state import DONE_NAME, warn_if_unfinished

    seen = []

    def killed(best):
        seen.append((best.name, (best.parent / DONE_NAME).exists()))
        raise KeyboardInterrupt

    config = TrainConfig(epochs=1, eval_at_start=False)
    with pytest.raises(KeyboardInterrupt):
        fit(ToyStep(), EXAMPLES[:8], EXAMPLES[8:], config, tmp_path / "out", progress=False, on_finish=killed)
    assert seen == [("best", False)] and not (tmp_path / "out" / DONE_NAME).exists()
    with caplog.at_level(logging.WARNING):
        warn_if_unfinished(tmp_path / "out" / "best")
    assert "its training has not finished" in caplog.text and "--resume" in caplog.text
    fit(ToyStep(), EXAMPLES[:8], EXAMPLES[8:], config, tmp_path / "out", resume=True, progress=False,
        on_finish=lambda best: seen.append((best.name, (best.parent / DONE_NAME).exists())))
    assert seen[-1] == ("best", False) and (tmp_path / "out" / DONE_NAME).is_file()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_if_unfinished(tmp_path / "out")
    assert "not finished" not in caplog.text


def test_a_run_judged_on_binary_dev_qrels_is_not_resumed_on_graded_ones(tmp_path):
    """Dev metrics now judge graded qrels at their grades; a run an older version started (binary judgments, no
    ``dev_graded`` in its state) cannot be continued on graded dev queries: its best value would not compare."""
    import dataclasses
    import json

    graded = [dataclasses.replace(e, grades=(2,)) for e in EXAMPLES[8:]]
    config = TrainConfig(epochs=1, eval_at_start=False)
    fit(ToyStep(), EXAMPLES[:8], graded, config, tmp_path / "out", progress=False)
    state_file = tmp_path / "out" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["dev_graded"] is True
    fit(ToyStep(), EXAMPLES[:8], graded, TrainConfig(epochs=2, eval_at_start=False), tmp_path / "out", resume=True,
        progress=False)  # recorded: resumes
    state = json.loads(state_file.read_text())
    del state["dev_graded"]  # as an older version wrote it
    state_file.write_text(json.dumps(state))
    with pytest.raises(InputError, match="binary dev judgments"):
        fit(ToyStep(), EXAMPLES[:8], graded, TrainConfig(epochs=3, eval_at_start=False), tmp_path / "out",
            resume=True, progress=False)


def _resume(saved: dict, now: dict, completed: int = 1, global_step: int = 3, steps_per_epoch: int = 3) -> None:
    from pathlib import Path

    from pyserini_qpeft.training.resume import check_resumed_data

    state = {"train_config": saved, "dev_qids": ["q9"], "completed_epochs": completed, "global_step": global_step}
    check_resumed_data(state, Path("/nonexistent/epoch-1"), {"train_config": now, "dev_qids": ["q9"]},
                       steps_per_epoch)


def test_resume_may_change_patience_but_not_the_seed_nor_planned_steps_under_a_warmup_ratio():
    base = {"epochs": 2, "patience": 1, "lr": 0.1, "seed": 1, "lr_schedule": "constant", "warmup_ratio": 0.0}
    _resume(base, {**base, "patience": 3, "epochs": 4})  # stop later, train longer: the same run continued
    with pytest.raises(InputError, match=r"--seed 1 -> 2"):  # another seed is another run (batches, dropout)
        _resume(base, {**base, "seed": 2})
    warm = {**base, "warmup_ratio": 0.5}  # the warmup spans a share of the planned steps
    with pytest.raises(InputError, match="--resume with other --epochs: this run's learning rate follows"):
        _resume(warm, {**warm, "epochs": 3})
    _resume(warm, warm)


def test_a_folder_holding_only_a_killed_trainings_lock_is_ours_and_a_sweep_never_writes_into_a_training(tmp_path):
    from pyserini_qpeft.training.state import LOCK_NAME, STATE_NAME, check_training_output

    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).touch()  # a training killed before it wrote anything else
    check_training_output(out)
    (out / STATE_NAME).write_text("{}")
    check_training_output(out)
    with pytest.raises(InputError, match="holds a training run, not a sweep"):
        check_training_output(out, sweep=True)


def test_a_tied_dev_metric_keeps_the_earlier_epoch_and_the_files_say_how_training_ended(tmp_path):
    """best/ is the first epoch of the best dev value (a tie is no improvement); best/ carries no optimizer state;
    training_done.json says whether patience stopped the run; fit refuses an empty training set."""
    from pyserini_qpeft.training.state import DONE_NAME, OPTIMIZER_JSON, OPTIMIZER_WEIGHTS

    config = TrainConfig(epochs=3, batch_size=4, eval_at_start=False, selection_metric="mrr@10")
    result = fit(ToyStep([1.0, 1.0, 1.0]), EXAMPLES[:8], EXAMPLES[8:], config, tmp_path / "tie", progress=False)
    assert result.best_epoch == 1 and not result.stopped_early
    assert not json.loads((tmp_path / "tie" / DONE_NAME).read_text())["stopped_early"]
    for name in (OPTIMIZER_WEIGHTS, OPTIMIZER_JSON):
        assert (tmp_path / "tie" / "epoch-3" / name).is_file() and not (tmp_path / "tie" / "best" / name).exists()
    stopping = TrainConfig(epochs=6, batch_size=4, patience=1, eval_at_start=False, selection_metric="mrr@10")
    fit(ToyStep([1.0, 0.0, 0.0]), EXAMPLES[:8], EXAMPLES[8:], stopping, tmp_path / "stop", progress=False)
    assert json.loads((tmp_path / "stop" / DONE_NAME).read_text())["stopped_early"] is True
    with pytest.raises(InputError, match="no training examples"):
        fit(ToyStep(), [], EXAMPLES[8:], config, tmp_path / "none", progress=False)


def test_a_max_steps_cap_in_a_resumed_run_counts_the_steps_already_done(tmp_path):
    config = TrainConfig(epochs=1, batch_size=2, eval_at_start=False)
    first = fit(ToyStep(), EXAMPLES[:6], EXAMPLES[8:], config, tmp_path / "out", progress=False)
    assert first.history[-1]["global_step"] == 3  # 3 steps an epoch
    capped = TrainConfig(epochs=2, batch_size=2, eval_at_start=False, max_steps=4)
    again = fit(ToyStep(), EXAMPLES[:6], EXAMPLES[8:], capped, tmp_path / "out", resume=True, progress=False)
    assert again.history[-1]["global_step"] == 4  # one more step, not a fresh cap of 4


def test_the_recorded_lm_precision_is_the_dtype_name():
    from types import SimpleNamespace

    from pyserini_qpeft.training.resume import lm_dtype

    assert lm_dtype(SimpleNamespace(dtype=torch.float32)) == "float32"  # as earlier versions' states hold it
    assert lm_dtype(SimpleNamespace(dtype=torch.bfloat16)) == "bfloat16"


def test_only_our_own_entries_make_a_folder_a_training_or_unfinished_sweep_of_ours(tmp_path):
    from pyserini_qpeft.training.state import STATE_NAME, SWEEP_DIR, check_training_output

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)  # a hidden name that is not ours
    with pytest.raises(InputError, match="holds no training run of ours"):
        check_training_output(repo)
    for extra in ("thesis.tex", f"{SWEEP_DIR}/notes.txt"):  # a user's file beside or inside sweep/
        out = tmp_path / extra.replace("/", "-")
        (out / SWEEP_DIR / "00-lr-0.01").mkdir(parents=True)
        (out / SWEEP_DIR / "00-lr-0.01" / STATE_NAME).write_text("{}")
        check_training_output(out, sweep=True)  # an unfinished sweep of ours: resumed
        (out / extra).write_text("mine")
        with pytest.raises(InputError):
            check_training_output(out, sweep=True)
