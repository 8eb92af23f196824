#!/bin/bash
# tekton-data warm without bytecode on ext4: tstore -v phases, cp -al of its generation, uv warm. 7 alternating runs.
D=/mnt/bext4/cold-tekton-data; cd $D
export TSTORE_HOME=/mnt/bext4/nobc/home UV_CACHE_DIR=/mnt/bext4/nobc/uv-cache
B=/work/tstore-e7ff
$B --config tiers-nobc.toml materialize --frozen tekton-data > /dev/null 2>&1 || { echo tstore fill failed; exit 1; }
uv venv -q --python 3.11 /mnt/bext4/nobc/uvv && uv pip sync -q --python /mnt/bext4/nobc/uvv/bin/python pylock.tekton-data.toml || { echo uv fill failed; exit 1; }
for i in 1 2 3 4 5 6 7; do
  $B --config tiers-nobc.toml remove tekton-data > /dev/null 2>&1; sync
  s=$(date +%s.%N); $B -v --config tiers-nobc.toml materialize --frozen tekton-data > /tmp/nobc-$i.log 2>&1; e=$(date +%s.%N)
  g=$(readlink -f venvs/tekton-data); rm -rf /mnt/bext4/nobc/cpal; sync
  s2=$(date +%s.%N); cp -al $g /mnt/bext4/nobc/cpal; e2=$(date +%s.%N)
  rm -rf /mnt/bext4/nobc/uvv; sync
  s3=$(date +%s.%N); uv venv -q --python 3.11 /mnt/bext4/nobc/uvv && uv pip sync -q --offline --link-mode hardlink --python /mnt/bext4/nobc/uvv/bin/python pylock.tekton-data.toml; e3=$(date +%s.%N)
  ph=$(grep -oE '(interpreter and lock|closure check|plan|venv skeleton|directories and files|save, record and switch): [0-9.]+ ms' /tmp/nobc-$i.log | sed 's/: /=/; s/ ms//' | tr '\n' ';')
  echo "run $i tstore $(echo "$e-$s"|bc) cpal $(echo "$e2-$s2"|bc) uv $(echo "$e3-$s3"|bc) | $ph"
done
