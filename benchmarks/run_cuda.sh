#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a CUDA GPU and the image's own python3 (torch, triton):
# benchmarks/network.py (whole networks, the CT volume), train_step.py and amp_cuda.py on CUDA, the Triton kernels'
# tests, wkv_cuda.py and a profile, in the order of what the GPU issue measures first, each writing its section
# into a copy of RESULTS.md under $OUT (default: ./cuda_results). Needs data/ct (scripts/prepare_ct_data.py).
# Knobs: *_S time limits per step and TOTAL_S for the whole script (default 480 s, so that one 10-minute device
# call holds it: a step gets at most what is left and is skipped with under 20 s left; a step stopped by its
# limit writes no section, its log stays), WKV_ARGS / NET_ARGS extra arguments, SKIP_AMP / SKIP_TRAIN /
# SKIP_PROFILE. Seen on an H100 (2026-11-26): the Triton tests 63 s; `WKV_ARGS="--max-tokens 1048576"` over 120 s
# (fwd+bwd timed on every cell; stopped at 120 s after its last cell); amp 84 s; `NET_ARGS="--sizes 512 1024 2048
# --repeats 3 --volume-slices 64"` 48 s; train_step with a 64-slice volume run 189 s together.
# Wheels for packages the GPU image lacks (monai, nibabel, pydicom, ...) may wait in .whl/.
set -u
OUT=${OUT:-cuda_results}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
TOTAL_S=${TOTAL_S:-480}
step() {  # step SECONDS NAME COMMAND...: run with a time limit (at most what TOTAL_S leaves), keep the log
    local limit=$1 name=$2
    shift 2
    local left=$((TOTAL_S - SECONDS))
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped (${left} s of TOTAL_S=${TOTAL_S} left)"
        return
    fi
    [ "$limit" -le "$left" ] || limit=$left
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - t0)) s (limit ${limit} s)"
    tail -n "${TAIL:-4}" "$OUT/$name.log"
}
# shellcheck disable=SC2086  # *_ARGS: extra arguments, split on spaces on purpose
step "${NET_S:-240}" network python3 benchmarks/network.py --device cuda ${NET_ARGS:---volume-slices 64 --repeats 5} \
    --write "$OUT/RESULTS.md"
[ -n "${SKIP_TRAIN:-}" ] || step "${TRAIN_S:-200}" train python3 benchmarks/train_step.py --device cuda --batch 8 \
    --repeats 5 --write "$OUT/RESULTS.md"
if [ -z "${SKIP_AMP:-}" ]; then
    step "${AMP_S:-150}" amp python3 benchmarks/amp_cuda.py --write "$OUT/RESULTS.md"
fi
step "${PYTEST_S:-90}" pytest python3 -m pytest -q -p no:cacheprovider tests/ops/test_triton_wkv.py
# shellcheck disable=SC2086
step "${WKV_S:-240}" wkv python3 benchmarks/wkv_cuda.py ${WKV_ARGS:-} --write "$OUT/RESULTS.md"
[ -n "${SKIP_PROFILE:-}" ] || TAIL=30 step "${PROFILE_S:-60}" profile python3 benchmarks/profile_network.py --model restore-rwkv-paper --size 512 --rows 20
