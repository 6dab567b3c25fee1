#!/usr/bin/env bash
# The split's Processing job as its container runs it, on this machine: a fresh Python 3.12 (the
# image's) installs the wheelhouse offline with the job's own install command, then splits the
# same input as the worker (this venv, Python 3.11) with four strategies; the parts must be equal.
#
#   bash bench/split_job.sh [RECORDS]     (after make test-fast, for .venv; needs PyPI for the wheels)
set -euo pipefail
records=${1:-200000}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=$root/.venv/bin/python
python312=$(ls /root/.pyenv/versions/3.12.*/bin/python3.12 2>/dev/null | head -1 || command -v python3.12)
"$root/scripts/split-wheelhouse" "$work/code" 3.12
"$python312" -m venv "$work/image"
install=$("$python" -c "from airflow_smx.core.folds import offload
print(offload.install_command(offload.versions()).replace(offload.CODE, '$work/code'))")
start=$(date +%s.%N)
PATH=$work/image/bin:$PATH sh -c "$install" 2>/dev/null
echo "the job's install: $(echo "$(date +%s.%N) - $start" | bc) s, offline, into $("$work/image/bin/python" --version)"
"$python" - "$work" "$records" <<'PY'
import json, random, sys
from airflow_smx.core.folds import offload
from airflow_smx.core.request import CVSpec, InputSpec
work, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
with open(f"{work}/in.jsonl", "w") as out:
    for i in range(n):
        out.write(json.dumps({"id": i, "class": f"c{int(rng.paretovariate(1.5)) % 7}", "site": rng.randrange(500)}) + "\n")
spec = InputSpec(uri=f"file://{work}/in.jsonl", label="class", group="site")
for strategy in ("kfold", "stratified", "group", "stratified_group"):
    cv = CVSpec(strategy=strategy, n_splits=5, random_state=3, holdout=0.1)
    for who in ("worker", "job"):
        folder = f"file://{work}/{who}-{strategy}"
        doc = offload.document(spec, cv, f"{folder}/folds", folder, "by-hand", assemble_train=False, final=True)
        json.dump(doc, open(f"{work}/{who}-{strategy}.json", "w"))
PY
for strategy in kfold stratified group stratified_group; do
    "$python" -m airflow_smx.core.folds.offload "$work/worker-$strategy.json" 2>/dev/null
    "$work/image/bin/python" -m airflow_smx.core.folds.offload "$work/job-$strategy.json" 2>/dev/null
    worker=$(cd "$work/worker-$strategy/folds" && sha256sum part-* holdout* | sha256sum)
    job=$(cd "$work/job-$strategy/folds" && sha256sum part-* holdout* | sha256sum)
    [ "$worker" = "$job" ] || { echo "$strategy: the job's parts differ from the worker's"; exit 1; }
    echo "$strategy: $(ls "$work/job-$strategy/folds" | grep -c part-) parts and the hold-out, byte for byte the worker's"
done
