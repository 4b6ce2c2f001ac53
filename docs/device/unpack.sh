#!/bin/bash
# Put a device call's outputs (run.sh's checkpoints*.tgz / runs.tgz / logs.tgz) into this checkout, never over an
# existing file; then `repro beir` with the plan's arguments and --check does the rest here (select-interpolation,
# fuse, evaluate: no LM work) and finds the trained checkpoints and reranks done.
#   bash docs/device/unpack.sh FILES_AT
set -euo pipefail
FROM=${1:?usage: unpack.sh FILES_AT, the folder where the device call returned its files}
logs=logs/device-$(date +%Y%m%d-%H%M%S)
found=0
for f in $(find "$FROM" -name 'checkpoints*.tgz' -o -name runs.tgz -o -name logs.tgz | sort); do
  found=1
  if tar tzf "$f" | grep -qxE '(\./)?logs/TINY' && [ "${TINY:-0}" != 1 ]; then
    echo "$(basename "$f"): a CPU smoke test's outputs (run.sh TINY=1), not a device's: not unpacked"; exit 3
  fi
  dest=.; [ "$(basename "$f")" = logs.tgz ] && dest=$logs
  clash=$(tar tzf "$f" | while IFS= read -r p; do [ -e "$dest/$p" ] && [ ! -d "$dest/$p" ] && echo "$p"; done || true)
  if [ -n "$clash" ]; then
    echo "$(basename "$f"): $(wc -l <<< "$clash") of its files exist here (e.g. $(head -1 <<< "$clash")): not unpacked"
    continue
  fi
  mkdir -p "$dest" && tar xzf "$f" -C "$dest" && echo "unpacked $(basename "$f") into $dest ($(tar tzf "$f" | wc -l) entries)"
done
[ $found = 1 ] || { echo "no checkpoints*.tgz, runs.tgz or logs.tgz under $FROM"; exit 2; }
