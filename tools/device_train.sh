#!/usr/bin/env bash
# Issue 20 on a lent GPU: train three tiny-english candidates at once on one GPU, then pack them.
#
# Run from the repository root on the device machine, with the corpus built here first
# (python -c "from offline_corpus import ...; save_corpus(...)" in tools/, written to .gpu/corpus.pt,
# carried along). Writes $OUT/train.tar.* (15 MB pieces: cat them and untar) and the logs in it.
# Usage: bash tools/device_train.sh SECONDS   (each run's training budget)
# Dry run on a CPU: DEVICE=cpu EXTRA='--batch-size 2 --n-ctx 32 --warmup 5 --eval-every 20' OUT=/tmp/o bash tools/device_train.sh 15
set -u
budget=${1:-330}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
mix=code=0.35,docstrings=0.2,docs=0.05,repeats=0.25,random_repeats=0.15
common="--corpus ../.gpu/corpus.pt --device ${DEVICE:-cuda} --bf16 --n-ctx 256 --batch-size 64 --warmup 200
        --steps 40000 --time-budget $budget --eval-every 1000 --checkpoint-every 1000000 --mix $mix"
mkdir -p /tmp/res
run() {  # name, then the run's own settings
    local name=$1; shift
    (cd tools && timeout $((budget + 120)) python3 train_offline_model.py --out /tmp/res/$name $common "$@" ${EXTRA:-} \
        > /tmp/res/$name.log 2>&1; echo "exit $?" >> /tmp/res/$name.log) &
}
run A --n-layer 4 --d-model 128 --n-head 8 --lr 3e-3
run B --n-layer 4 --d-model 128 --n-head 4 --lr 3e-3
run C --n-layer 4 --d-model 192 --n-head 8 --lr 2e-3
sleep 45; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
wait
for name in A B C; do echo "== $name"; grep -E "^step|lowered|saved|exit|Error" /tmp/res/$name.log | tail -25; done
rm -f /tmp/res/*/checkpoint.pt
tar cf - -C /tmp res | split -b 15000000 - "$OUT/train.tar."
ls -la "$OUT"
