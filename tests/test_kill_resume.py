"""SIGKILL at a random point, then the same command again: the result is byte-identical to an uninterrupted run;
Ctrl-C: exit code 130, a message, nothing half-published.

One test per resumable command: ``rerank``, ``encode``, ``train qpeft``, ``train lmort`` and ``repro beir``. Each
runs the real CLI in a subprocess on the tiny fixture model. The tiny model is so fast that a job would finish
before it could be killed, so a ``sitecustomize`` hook (test-only, on the subprocess's PYTHONPATH) slows one
method down; the random kill point is drawn from a seed printed in every assertion message.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from conftest import TOY_QUERIES, TOY_TEXTS, write_beir

HOOK = '''
import importlib, os, time
for item in filter(None, os.environ.get("QPEFT_TEST_SLOW", "").split(";")):
    target, seconds = item.split("=")
    module_name, attr = target.split(":")
    owner_name, _, name = attr.rpartition(".")
    module = importlib.import_module(module_name)
    owner = getattr(module, owner_name) if owner_name else module
    def slow(*args, _original=getattr(owner, name), _seconds=float(seconds), **kwargs):
        result = _original(*args, **kwargs)
        time.sleep(_seconds)
        return result
    setattr(owner, name, slow)
for item in filter(None, os.environ.get("QPEFT_TEST_SET", "").split(";")):
    target, value = item.split("=")
    module_name, attr = target.split(":")
    owner_name, _, name = attr.rpartition(".")
    setattr(getattr(importlib.import_module(module_name), owner_name), name, float(value))
'''

SEED = int(os.environ.get("QPEFT_KILL_SEED", 0)) or int.from_bytes(os.urandom(2), "big")


@pytest.fixture()
def hook(tmp_path) -> Path:
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HOOK)
    return folder


@pytest.fixture()
def big_beir(tmp_path) -> Path:
    """The toy BEIR dataset plus 150 generated documents (enough work for several groups / batches)."""
    root = write_beir(tmp_path / "big")
    rng = random.Random(7)
    words = " ".join(TOY_TEXTS).split()
    with open(root / "corpus.jsonl", "a") as handle:
        for i in range(150):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(6, 18)))
            handle.write(json.dumps({"_id": f"g{i:03d}", "title": "", "text": text}) + "\n")
    return root


def first_stage(path: Path, corpus: Path) -> Path:
    docids = [json.loads(line)["_id"] for line in corpus.read_text().splitlines()]
    path.write_text("".join(f"{q['_id']} Q0 {d} {r + 1} {len(docids) - r}.0 bm25\n"
                            for q in TOY_QUERIES for r, d in enumerate(docids)))
    return path


def cli(args: list[str], hook: Path, slow: str = "", set_: str = "", cwd: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
               QPEFT_TEST_SLOW=slow, QPEFT_TEST_SET=set_)
    return subprocess.Popen([sys.executable, "-m", "pyserini_qpeft", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"seed {SEED}: exit {proc.returncode}\n{err[-3000:]}"
    return out


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], jitter: float, timeout: float = 600) -> None:
    """SIGKILL ``proc`` ``jitter`` seconds after ``ready()`` first holds; fail if it finished first."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"seed {SEED}: finished before the kill point\n{proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, f"seed {SEED}: kill point never reached"
        time.sleep(0.02)
    time.sleep(jitter)
    assert proc.poll() is None, f"seed {SEED}: finished before the kill (jitter {jitter:.2f} s)"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def batch_count(state: Path) -> int:
    """Finished scoring batches recorded in a rerank state file."""
    return state.read_text(errors="replace").count("#done\n") if state.is_file() else 0


def assert_same_run(out: Path, ref: Path, rerun: Callable[[Path], None], context: str) -> None:
    """``out`` equals the uninterrupted run ``ref`` byte for byte. On a mismatch, the message lists the differing
    lines and whether a second uninterrupted run (``rerun(path)``) equals ``ref``: if it does not, scoring itself
    is not run-to-run reproducible here and the resume is not the cause."""
    if out.read_bytes() == ref.read_bytes():
        return
    diff = [(a, b) for a, b in zip(ref.read_text().splitlines(), out.read_text().splitlines()) if a != b]
    again = ref.with_name(ref.name + ".again")
    rerun(again)
    repeat = "equals it" if again.read_bytes() == ref.read_bytes() else "differs from it too"
    pytest.fail(f"{context}: the resumed run differs from the uninterrupted one in {len(diff)} lines, e.g. "
                f"{diff[:3]}; a second uninterrupted run {repeat}")


def upr_rerank(tiny_lm_path: Path, big_beir: Path, tmp_path: Path, hook: Path) -> list[str]:
    """The UPR rerank command (without --output) of the big fixture; its uninterrupted run is ``tmp_path/ref.trec``."""
    run = first_stage(tmp_path / "bm25.trec", big_beir / "corpus.jsonl")
    common = ["rerank", "--run", str(run), "--topics", str(big_beir / "queries.jsonl"), "--corpus", str(big_beir),
              "--reranker", "upr", "--rerank-depth", "156", "--model", str(tiny_lm_path), "--device", "cpu",
              "--dtype", "fp32", "-q"]
    finish(cli([*common, "--output", str(tmp_path / "ref.trec")], hook))
    return common


def test_rerank_killed_anywhere_resumes_byte_identical(tiny_lm_path, big_beir, hook, tmp_path):
    rng = random.Random(SEED)
    common = upr_rerank(tiny_lm_path, big_beir, tmp_path, hook)
    out = tmp_path / "out.trec"
    slow = "pyserini_qpeft.rerank.lm:_State.append=0.2"  # 5 groups of <= 32 documents = 10 batches of <= 64 pairs
    proc = cli([*common, "--output", str(out)], hook, slow)
    at = rng.randint(1, 7)
    kill_when(proc, lambda: batch_count(Path(f"{out}.partial")) >= at, rng.uniform(0, 0.2))
    assert not out.exists() and Path(f"{out}.partial").is_file()
    finish(cli([*common, "--output", str(out)], hook))
    assert_same_run(out, tmp_path / "ref.trec", lambda path: finish(cli([*common, "--output", str(path)], hook)),
                    f"seed {SEED} (killed after {at} batches)")
    assert not Path(f"{out}.partial").exists()


def test_encode_killed_anywhere_resumes_byte_identical(tiny_lm_path, big_beir, hook, tmp_path):
    rng = random.Random(SEED)
    common = ["encode", "--encoder", "frozen-lm", "--model", str(tiny_lm_path), "--dataset", str(big_beir),
              "--batch-size", "8", "--max-length", "32", "--device", "cpu", "--dtype", "fp32", "-q"]
    finish(cli([*common, "--output", str(tmp_path / "ref")], hook))
    out = tmp_path / "out"
    partial = Path(f"{out}.partial")
    slow = "pyserini_qpeft.search.encoders:FrozenLMEncoder._encode=0.2"  # 20 batches
    proc = cli([*common, "--output", str(out)], hook, slow, "pyserini_qpeft.search.encode_state:EncodeState."
                                                              "FLUSH_SECONDS=0")
    at = rng.randint(1, 12)
    kill_when(proc, lambda: len(list(partial.glob("part-*.npy"))) >= at, rng.uniform(0, 0.3))
    assert not out.exists()
    finish(cli([*common, "--output", str(out)], hook))
    for name in ("index", "docid"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), f"seed {SEED}: {name}"
    ref_meta = json.loads((tmp_path / "ref" / "meta.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert {k: v for k, v in meta.items() if k != "encode_seconds"} == \
        {k: v for k, v in ref_meta.items() if k != "encode_seconds"}
    # the killed run's time counts: >= 0.2 s for each of its >= `at` saved batches (the resumed run is not slowed)
    assert meta["encode_seconds"] >= round(0.2 * at, 1) - 0.1, (meta["encode_seconds"], at)
    assert not partial.exists()


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {p.name: load_file(str(p)) for p in sorted(folder.glob("*.safetensors"))}


def same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(
        wa[f].keys() == wb[f].keys() and all(torch.equal(wa[f][k], wb[f][k]) for k in wa[f]) for f in wa)


def history(folder: Path) -> list[dict]:
    state = json.loads((folder / "trainer_state.json").read_text())
    return [{k: v for k, v in h.items() if "seconds" not in k} for h in state["history"]]


@pytest.mark.parametrize("method", ["qpeft", "lmort"])
def test_training_killed_anywhere_resumes_to_the_same_weights(tiny_lm_path, toy_beir, hook, tmp_path, method):
    rng = random.Random(SEED)
    negatives = first_stage(tmp_path / "neg.trec", toy_beir / "corpus.jsonl")
    lm = ["--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "--quiet"]
    if method == "qpeft":
        common = ["train", "qpeft", "--variant", "attn", "--dataset", str(toy_beir), "--negatives", str(negatives),
                  "--epochs", "4", "--batch-size", "1", "--dev-size", "1", *lm]
        slow = "pyserini_qpeft.qpeft.step:QPeftStep.step=0.5"
    else:
        common = ["train", "lmort", "--dataset", str(toy_beir), "--negatives", str(negatives), "--layers", "1,2",
                  "--epochs", "4", "--batch-size", "1", "--dim", "32", "--ffn-dim", "64", "--max-length", "32",
                  "--dev-fraction", "0", *lm]
        slow = "pyserini_qpeft.lmort.step:LMORTStep.step=0.5"
    finish(cli([*common, "--output", str(tmp_path / "ref")], hook))
    out = tmp_path / "out"
    proc = cli([*common, "--output", str(out)], hook, slow)
    epoch = rng.randint(1, 3)
    kill_when(proc, lambda: (out / f"epoch-{epoch}").is_dir(), rng.uniform(0, 0.6))
    # best/ may already hold an early epoch; only training_done.json says the run finished (what `repro` checks).
    # The kill may land after the last epoch (random delay): then the marker may exist, never before.
    assert (out / "epoch-4").is_dir() or not (out / "training_done.json").exists(), \
        f"seed {SEED}: killed after epoch {epoch}"
    finish(cli([*common, "--output", str(out), "--resume"], hook))
    done = json.loads((out / "training_done.json").read_text())
    assert done == json.loads((tmp_path / "ref" / "training_done.json").read_text()), f"seed {SEED}"
    assert done["completed_epochs"] == 4 and not done["stopped_early"], f"seed {SEED}"
    for folder in ("epoch-4", "best"):
        assert same_weights(out / folder, tmp_path / "ref" / folder), f"seed {SEED}: {folder} (killed after {epoch})"
    assert history(out) == history(tmp_path / "ref"), f"seed {SEED}"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], f"seed {SEED}: leftovers"


REPRO_YAML = """
metrics: [ndcg@10]
profiles:
  full: {{suffix: ""}}
artifacts:
  index:
    output: {root}/indexes/lucene-{{dataset}}
    done: pyserini_qpeft_index.json
    command: index --dataset {{dataset}} --index {{output}}
  bm25:
    output: {root}/runs/bm25.{{dataset}}.trec
    needs: [index]
    command: search --bm25 --index {{index}} --topics beir-v1.0.0-{{dataset}}-test --output {{output}} --hits 100 -q
  upr:
    output: {root}/runs/upr.{{dataset}}.trec
    needs: [bm25]
    command: rerank --run {{bm25}} --topics beir-v1.0.0-{{dataset}}-test --index {{index}} --reranker upr
      --rerank-depth 100 --model {model} --device cpu --dtype fp32 --output {{output}} -q
conditions:
  upr:
    first_stage: bm25
    reranker: upr
    run: upr
"""


@pytest.mark.jvm
def test_repro_killed_anywhere_resumes_to_the_same_runs(tiny_lm_path, big_beir, hook, tmp_path, monkeypatch):
    rng = random.Random(SEED)
    monkeypatch.setenv("PYSERINI_QPEFT_DATA", str(big_beir.parent))
    with open(big_beir / "queries.jsonl", "a") as handle:  # more test queries: more rerank groups
        for i in range(6):
            handle.write(json.dumps({"_id": f"x{i}", "text": TOY_TEXTS[i]}) + "\n")
    with open(big_beir / "qrels" / "test.tsv", "a") as handle:
        handle.writelines(f"x{i}\tg{i:03d}\t1\r\n" for i in range(6))
    results = {}
    for name in ("ref", "out"):
        root = tmp_path / name
        root.mkdir()
        yaml_path = root / "matrix.yaml"
        yaml_path.write_text(REPRO_YAML.format(root=root, model=tiny_lm_path))
        args = ["repro", "beir", "--dataset", "big", "--yaml", str(yaml_path), "--report-dir", str(root / "report"),
                "--json"]
        if name == "out":
            state = root / "runs" / "upr.big.trec.partial"
            proc = cli(args, hook, "pyserini_qpeft.rerank.lm:_State.append=0.4")
            at = rng.randint(1, 3)
            kill_when(proc, lambda: batch_count(state) >= at, rng.uniform(0, 0.3))
            assert (root / "runs" / "bm25.big.trec").is_file() and not (root / "runs" / "upr.big.trec").exists()
        results[name] = json.loads(finish(cli(args, hook)))
    for run in ("bm25.big.trec", "upr.big.trec"):
        assert (tmp_path / "out" / "runs" / run).read_bytes() == (tmp_path / "ref" / "runs" / run).read_bytes(), \
            f"seed {SEED}: {run}"
    assert results["out"][0]["ndcg@10"] == results["ref"][0]["ndcg@10"]


def interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 600) -> tuple[str, str]:
    """Ctrl-C (SIGINT) ``proc`` as soon as ``ready()`` holds; returns its (stdout, stderr)."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before the interrupt\n{proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "interrupt point never reached"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=120)


@pytest.mark.jvm
def test_ctrl_c_during_index_exits_130_and_leaves_nothing(big_beir, hook, tmp_path):
    target = tmp_path / "index"
    proc = cli(["index", "--corpus", str(big_beir / "corpus.jsonl"), "--index", str(target)], hook)
    # the collection folder, then the staging folder: Anserini's child JVM is starting or running
    _, err = interrupt_when(proc, lambda: len(list(tmp_path.glob(".index.*.tmp"))) >= 2)
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    assert not target.exists() and not list(tmp_path.glob(".index.*")), list(tmp_path.iterdir())



def _command(pid: int) -> str:
    """The program of process ``pid`` ("" when it has exited meanwhile: a short-lived child raced the listing)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0]
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _gone(pid: int, within: float = 20.0) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, waiting to be reaped by its (new) parent
            return True
        time.sleep(0.1)
    return False


@pytest.mark.jvm
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; the child's death signal is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_terminated_or_killed_index_takes_its_java_child_with_it(hook, tmp_path, sig):
    """SIGTERM (a scheduler, `timeout`) ended `index` at once without clean-up, and SIGKILL left Anserini's child JVM
    orphaned, indexing on (12 s here) into a temporary folder that the next run swept while it wrote (and that it
    recreated after that run). Now SIGTERM gets Ctrl-C's clean-up (exit 143, a line, nothing left) and the child
    dies with its parent in both cases."""
    rng = random.Random(7)
    words = " ".join(TOY_TEXTS).split()
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as handle:  # enough to keep Anserini busy for seconds
        for i in range(30000):
            text = " ".join(rng.choice(words) for _ in range(10))
            handle.write(json.dumps({"_id": f"g{i:05d}", "title": "", "text": text}) + "\n")
    target = tmp_path / "index"
    proc = cli(["index", "--corpus", str(corpus), "--index", str(target)], hook)
    deadline = time.time() + 300
    java: list[int] = []
    while not (java and list(tmp_path.glob(".index.*.tmp/write.lock"))):  # Anserini is writing the index
        assert proc.poll() is None, f"finished before Anserini ran\n{proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, "Anserini never started"
        java = [c for c in _children(proc.pid) if "java" in _command(c)]
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert _gone(java[0], within=2.0), "the child JVM outlived its parent"
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err, err[-2000:]
        assert not target.exists() and not list(tmp_path.glob(".index.*")), list(tmp_path.iterdir())
    else:
        assert proc.returncode == -signal.SIGKILL

@pytest.mark.jvm
def test_ctrl_c_during_a_rerank_with_the_jvm_running_exits_130_and_resumes(tiny_lm_path, big_beir, hook, tmp_path):
    from pyserini_qpeft.search import build_index

    index = build_index(big_beir / "corpus.jsonl", tmp_path / "index")  # document text from Lucene: JVM in-process
    run = first_stage(tmp_path / "bm25.trec", big_beir / "corpus.jsonl")
    common = ["rerank", "--run", str(run), "--topics", str(big_beir / "queries.jsonl"), "--index", str(index),
              "--reranker", "upr", "--rerank-depth", "156", "--model", str(tiny_lm_path), "--device", "cpu",
              "--dtype", "fp32", "-q"]
    finish(cli([*common, "--output", str(tmp_path / "ref.trec")], hook))
    out = tmp_path / "out.trec"
    proc = cli([*common, "--output", str(out)], hook, "pyserini_qpeft.rerank.lm:_State.append=0.4")
    _, err = interrupt_when(proc, lambda: batch_count(Path(f"{out}.partial")) >= 1)
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    assert not out.exists() and batch_count(Path(f"{out}.partial")) >= 1
    finish(cli([*common, "--output", str(out)], hook))
    assert_same_run(out, tmp_path / "ref.trec", lambda path: finish(cli([*common, "--output", str(path)], hook)),
                    "Ctrl-C after the first batch")


@pytest.mark.slow
def test_ray_driver_killed_anywhere_resumes_byte_identical(tiny_lm_path, big_beir, hook, tmp_path):
    """``rerank --engine ray``: SIGKILL the driver mid-job, run the same command again: the finished shards are
    reused from disk and the run equals the serial one byte for byte."""
    pytest.importorskip("ray.data")
    rng = random.Random(SEED)
    common = upr_rerank(tiny_lm_path, big_beir, tmp_path, hook)
    out = tmp_path / "out.trec"
    ray_flags = ["--engine", "ray", "--workers", "2"]
    proc = cli([*common, "--output", str(out), *ray_flags], hook, "pyserini_qpeft.rerank.lm:_State.append=0.3")
    at = rng.randint(1, 6)
    kill_when(proc, lambda: sum(batch_count(p) for p in tmp_path.glob("out.trec.shard-*")) >= at,
              rng.uniform(0, 0.3))
    assert not out.exists()
    finish(cli([*common, "--output", str(out), *ray_flags], hook))
    assert_same_run(out, tmp_path / "ref.trec",
                    lambda path: finish(cli([*common, "--output", str(path), *ray_flags], hook)),
                    f"seed {SEED} (killed after {at} batches)")
    assert not list(tmp_path.glob("out.trec.*")), f"seed {SEED}: leftovers"
