#!/usr/bin/env bash
# The prepared GPU check (docs/cuda.md): the CUDA tests, bench/bench.py eager and --compile on
# whole 45,000-image ResNet-20s epochs, and a short IMP-vs-PrAC search on Fashion-MNIST, each
# part stopped at its time limit (480 s in all at --scale full), then one summary of every
# figure with the GPU and versions in OUT/summary.txt. It installs and downloads nothing.
set -uo pipefail

usage() {
    cat <<'EOF'
usage: tools/gpu_check.sh FASHION_DIR [--device cuda|cpu] [--scale full|small] [--out DIR]
                          [--parts tests,bench,compile,search]
FASHION_DIR holds Fashion-MNIST's four idx files (.gz or not). --device cpu --scale small
runs the same parts at toy sizes on a CPU (CI does). Default: cuda, full, gpu_check_out/,
every part. Python: the first of $PYTHON (one or more, space-separated; default
".venv/bin/python python3") that imports every module and whose torch sees the device.
EOF
}

cd "$(dirname "$0")/.."
DEVICE=cuda SCALE=full OUT=gpu_check_out PARTS=tests,bench,compile,search DATA=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --device|--scale|--out|--parts)
            [ $# -ge 2 ] && [ -n "$2" ] || { echo "gpu_check: $1 needs a value" >&2; exit 2; }
            case "$1" in --device) DEVICE=$2 ;; --scale) SCALE=$2 ;; --out) OUT=$2 ;; --parts) PARTS=$2 ;; esac
            shift ;;
        -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) [ -z "$DATA" ] || { echo "gpu_check: one FASHION_DIR, not also $1" >&2; exit 2; }; DATA=$1 ;;
    esac
    shift
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: --device is cuda or cpu, not $DEVICE" >&2; exit 2 ;; esac
case "$SCALE" in full|small) ;; *) echo "gpu_check: --scale is full or small, not $SCALE" >&2; exit 2 ;; esac
for part in ${PARTS//,/ }; do
    case "$part" in tests|bench|compile|search) ;;
        *) echo "gpu_check: --parts takes tests, bench, compile, search; not $part" >&2; exit 2 ;; esac
done
want() { [[ ",$PARTS," == *",$1,"* ]]; }
if want search && [ -z "$DATA" ]; then echo "gpu_check: name FASHION_DIR (the search part needs it)" >&2; exit 2; fi

# Item 6 of issue 19: a copied CPU-only .venv must not hide a system Python that sees the GPU.
# shellcheck disable=SC2206  # $PYTHON may name several interpreters, tried in order
if [ -n "${PYTHON:-}" ]; then CANDIDATES=($PYTHON); else CANDIDATES=(.venv/bin/python python3); fi
PY="" REASONS=""
for candidate in "${CANDIDATES[@]}"; do
    if reason=$("$candidate" tools/gpu_check.py preflight --device "$DEVICE" 2>&1 | tail -n 1); then
        PY=$candidate; break
    fi
    REASONS="$REASONS; ${reason:-$candidate cannot run}"
done
[ -n "$PY" ] || { echo "gpu_check: no usable Python${REASONS}" >&2; exit 2; }
if want search; then "$PY" tools/gpu_check.py data "$DATA" || exit 2; fi
mkdir -p "$OUT"

# Seconds per part; at --scale full they add up to 8 minutes of a 15-minute device budget.
declare -A LIMIT=([tests]=150 [bench]=90 [compile]=120 [search]=120)
part() {  # NAME, command...: runs it under its limit, logs to OUT/NAME.log, records rc and seconds
    local name=$1; shift
    echo "gpu_check: $name (limit ${LIMIT[$name]} s) -> $OUT/$name.log"
    echo "$*" > "$OUT/$name.command"
    local start; start=$(date +%s)
    timeout --kill-after=10 "${LIMIT[$name]}" "$@" > "$OUT/$name.log" 2>&1
    echo $? > "$OUT/$name.rc"
    echo $(( $(date +%s) - start )) > "$OUT/$name.seconds"
}

if [ "$SCALE" = full ]; then
    # The quick tier of the modules where the device matters, most telling first, so a part
    # stopped at its limit has run those (the full tier's forked crash-consistency children
    # and torchrun jobs stay out).
    TESTS=(tests/test_device.py tests/test_prac_e2e.py tests/test_streamed.py tests/test_resume.py
           tests/test_bench.py tests/test_pruner.py tests/test_dataset.py tests/test_imp_e2e.py
           tests/test_retrain.py tests/test_selection.py)
    BENCH=()
    SEARCH_DATA=$DATA SPLIT=npy_files/fashionmnist-train-val.npy ROUNDS=3 EPOCHS=6 MILESTONES=3,5 REWIND=1
else
    TESTS=(tests/test_device.py -k "fake_cuda or fp32")
    BENCH=(--quick --n 256 --steps 1 --eval_n 64 --eval_batch_size 32 --threads 1)
    SEARCH_DATA=$OUT/search/data SPLIT=$OUT/search/data/split.npy ROUNDS=2 EPOCHS=2 MILESTONES=1 REWIND=0
fi
want tests && part tests "$PY" -m pytest -o addopts= -v -rfE -p no:cacheprovider --device "$DEVICE" \
    "${TESTS[@]}"
want bench && part bench "$PY" bench/bench.py --device "$DEVICE" "${BENCH[@]}" --out "$OUT/bench.md"
want compile && part compile "$PY" bench/bench.py --device "$DEVICE" --compile "${BENCH[@]}" --out "$OUT/compile.md"

if want search; then
    rm -rf "$OUT/search"
    mkdir -p "$OUT/search"
    if [ "$SCALE" = small ]; then
        "$PY" tools/gpu_check.py subset "$DATA" "$SEARCH_DATA" "$SPLIT" --train 2000 --test 500 || exit 2
    fi
    FLAGS=(--data "$SEARCH_DATA" --dataset fashionmnist --arch res20s --split_file "$SPLIT" --batch_size 128
           --lr 0.1 --epochs $EPOCHS --decreasing_lr $MILESTONES --seed 1 --device "$DEVICE" --no_progress
           --print_freq 1000 --pruning_times $ROUNDS --prune_type rewind_lt --rewind_epoch $REWIND)
    echo "ResNet-20s on Fashion-MNIST ($SEARCH_DATA), $ROUNDS rounds x $EPOCHS epochs (LR x0.1 at" \
         "$MILESTONES), rewind_lt at epoch index $REWIND, seed 1, batch 128, fp32, IMP and PrAC at once" \
         > "$OUT/search/settings"
    part search "$PY" tools/gpu_check.py search "$OUT/search" "${FLAGS[@]}"
fi

"$PY" tools/gpu_check.py summary "$OUT" --device "$DEVICE" --parts "$PARTS"
