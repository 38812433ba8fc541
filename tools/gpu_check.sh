#!/usr/bin/env bash
# One command for a machine with a GPU: the test suite on CUDA, bench/bench.py on CUDA with and
# without --compile, and a short real IMP-vs-PrAC search on Fashion-MNIST, then one summary
# (GPU, torch version, every figure). Needs PyTorch, torchvision, numpy, matplotlib, tqdm and
# pytest already installed; it installs and downloads nothing, so it runs without a network.
set -uo pipefail

usage() {
    cat <<'EOF'
usage: tools/gpu_check.sh PART... [--device cuda|cpu] [--out DIR] [--scale full|small]
                          [--pytest_args "ARGS"] [--search_args "FLAGS"]

parts (each fits in one sitting of under 10 minutes on one H100-class GPU; run them
one at a time or together; the summary covers every part found in --out):
  --tests           pytest --device DEVICE over tests/ (or --pytest_args)
  --bench           bench/bench.py --device DEVICE (full sizes; --scale small: --quick, tiny)
  --bench_compile   the same with --compile (torch.compile is used on CUDA only)
  --search DIR      main_imp.py and main_PrAC_imp.py on Fashion-MNIST read from DIR (the four
                    idx files, .gz or not), then report.py. full: all 54,000/6,000/10,000
                    images, 3 rounds x 8 epochs; small: 2,000 train / 500 test images,
                    2 rounds x 2 epochs (for a CPU)
  --all DIR         all four parts, DIR as for --search
  --summary         only print the summary of what --out already holds

options:
  --device cuda|cpu   default cuda; cpu runs the same parts on the CPU (to prove the script)
  --out DIR           output folder (default gpu_check_out); each part writes a subfolder
  --scale full|small  sizes of --bench and --search (default full)
  --pytest_args ARGS  test selection and pytest options instead of tests/ (quoted)
  --search_args FLAGS extra flags for both searches, e.g. "--precision bf16" (quoted)

Python: $PYTHON, else .venv/bin/python when present, else python3.
EOF
}

cd "$(dirname "$0")/.."
DEVICE=cuda OUT=gpu_check_out SCALE=full DATA="" PYTEST_ARGS="tests" SEARCH_ARGS=""
RUN_TESTS=0 RUN_BENCH=0 RUN_COMPILE=0 RUN_SEARCH=0 SUMMARY_ONLY=0
need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ] || [[ "$2" == --* && "$1" != --*_args ]]; then
        echo "gpu_check: $1 needs a value" >&2; exit 2
    fi
}
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --tests) RUN_TESTS=1 ;;
        --bench) RUN_BENCH=1 ;;
        --bench_compile) RUN_COMPILE=1 ;;
        --search) need_value "$@"; RUN_SEARCH=1; DATA=$2; shift ;;
        --all) need_value "$@"; RUN_TESTS=1 RUN_BENCH=1 RUN_COMPILE=1 RUN_SEARCH=1; DATA=$2; shift ;;
        --summary) SUMMARY_ONLY=1 ;;
        --device) need_value "$@"; DEVICE=$2; shift ;;
        --out) need_value "$@"; OUT=$2; shift ;;
        --scale) need_value "$@"; SCALE=$2; shift ;;
        --pytest_args) need_value "$@"; PYTEST_ARGS=$2; shift ;;
        --search_args) need_value "$@"; SEARCH_ARGS=$2; shift ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: --device is cuda or cpu, not $DEVICE" >&2; exit 2 ;; esac
case "$SCALE" in full|small) ;; *) echo "gpu_check: --scale is full or small, not $SCALE" >&2; exit 2 ;; esac
if [ $((RUN_TESTS + RUN_BENCH + RUN_COMPILE + RUN_SEARCH + SUMMARY_ONLY)) -eq 0 ]; then
    echo "gpu_check: name at least one part: --tests, --bench, --bench_compile, --search DIR, --all DIR or --summary" >&2
    exit 2
fi

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
command -v "$PY" >/dev/null || { echo "gpu_check: no Python at $PY (set PYTHON)" >&2; exit 2; }
NEED=""
[ $RUN_TESTS -eq 1 ] && NEED="pytest"
# One line and exit code 2 when a module or (with --device cuda) the GPU is missing.
"$PY" tools/gpu_check.py preflight --device "$DEVICE" --need $NEED || exit 2
if [ $RUN_SEARCH -eq 1 ]; then
    "$PY" tools/gpu_check.py data "$DATA" || exit 2
fi
mkdir -p "$OUT"
FAILED=""

elapsed() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }

if [ $RUN_TESTS -eq 1 ]; then
    mkdir -p "$OUT/tests"
    echo "gpu_check: tests on $DEVICE -> $OUT/tests/pytest.log"
    echo "$PY -m pytest -q -rfE -p no:cacheprovider --device $DEVICE $PYTEST_ARGS" > "$OUT/tests/command"
    # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words by design
    "$PY" -m pytest -q -rfE -p no:cacheprovider --device "$DEVICE" $PYTEST_ARGS 2>&1 | tee "$OUT/tests/pytest.log"
    rc=${PIPESTATUS[0]}
    echo "$rc" > "$OUT/tests/rc"
    [ "$rc" -eq 0 ] || FAILED="$FAILED tests"
fi

bench() {  # NAME, extra bench.py flags...
    local name=$1; shift
    local sizes=()
    [ "$SCALE" = small ] && sizes=(--quick --n 256 --steps 1 --eval_n 64 --eval_batch_size 32 --threads 1)
    mkdir -p "$OUT/bench"
    rm -f "$OUT/bench/$name.md"
    echo "gpu_check: bench ($name) on $DEVICE -> $OUT/bench/$name.md"
    "$PY" bench/bench.py --device "$DEVICE" "${sizes[@]}" "$@" --out "$OUT/bench/$name.md" 2>&1 \
        | tee "$OUT/bench/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "$rc" > "$OUT/bench/$name.rc"
    [ "$rc" -eq 0 ] || FAILED="$FAILED bench_$name"
}
[ $RUN_BENCH -eq 1 ] && bench eager
[ $RUN_COMPILE -eq 1 ] && bench compile --compile

search_step() {  # NAME, command...
    local name=$1; shift
    local start; start=$(date +%s.%N)
    echo "\$ $*" >> "$SEARCH/commands"
    echo "gpu_check: search step $name -> $SEARCH/$name.log"
    "$@" > "$SEARCH/$name.log" 2>&1
    local rc=$?
    echo "$rc" > "$SEARCH/$name.rc"
    elapsed "$start" > "$SEARCH/$name.seconds"
    if [ "$rc" -ne 0 ]; then
        tail -n 5 "$SEARCH/$name.log" >&2
        FAILED="$FAILED search_$name"
    fi
    return "$rc"
}

if [ $RUN_SEARCH -eq 1 ]; then
    SEARCH=$OUT/search
    # A fresh run never writes into an earlier one: keep the earlier one aside.
    [ -e "$SEARCH" ] && mv "$SEARCH" "$SEARCH.$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$SEARCH"
    if [ "$SCALE" = full ]; then
        SEARCH_DATA=$DATA SPLIT=npy_files/fashionmnist-train-val.npy
        ROUNDS=3 EPOCHS=8 MILESTONES=4,6 REWIND=1
        SIZES="all of Fashion-MNIST: 54,000 train, 6,000 validation, 10,000 test images"
    else
        SEARCH_DATA=$SEARCH/data SPLIT=$SEARCH/data/split.npy
        ROUNDS=2 EPOCHS=2 MILESTONES=1 REWIND=0
        SIZES="the first 2,000 train (1,800 train + 200 validation) and 500 test images"
        "$PY" tools/gpu_check.py subset "$DATA" "$SEARCH_DATA" "$SPLIT" --train 2000 --test 500 || exit 2
    fi
    COMMON=(--data "$SEARCH_DATA" --dataset fashionmnist --arch res20s --split_file "$SPLIT" --batch_size 128
            --lr 0.1 --epochs $EPOCHS --decreasing_lr $MILESTONES --seed 1 --device "$DEVICE" --no_progress
            --print_freq 1000 --pruning_times $ROUNDS --prune_type rewind_lt --rewind_epoch $REWIND)
    # shellcheck disable=SC2206  # SEARCH_ARGS is a list of words by design
    COMMON+=($SEARCH_ARGS)
    { echo "scale $SCALE: $SIZES from $DATA"
      echo "ResNet-20s, $ROUNDS rounds x $EPOCHS epochs (LR x0.1 at $MILESTONES), rewind_lt at epoch index $REWIND, seed 1, batch 128, device $DEVICE ${SEARCH_ARGS}"
    } > "$SEARCH/settings"
    search_step imp "$PY" main_imp.py "${COMMON[@]}" --save_dir "$SEARCH/imp"
    search_step prac "$PY" main_PrAC_imp.py "${COMMON[@]}" --save_dir "$SEARCH/prac"
    if [ -e "$SEARCH/imp/rounds.csv" ] || [ -e "$SEARCH/prac/rounds.csv" ]; then
        runs=() names=()
        [ -e "$SEARCH/imp/rounds.csv" ] && runs+=("$SEARCH/imp") && names+=(IMP)
        [ -e "$SEARCH/prac/rounds.csv" ] && runs+=("$SEARCH/prac") && names+=(PrAC)
        search_step report "$PY" report.py "${runs[@]}" --name "${names[@]}" --out "$SEARCH/report" \
            && cp "$SEARCH/report.log" "$SEARCH/report.txt"
    fi
fi

"$PY" tools/gpu_check.py summary "$OUT" --device "$DEVICE"
if [ -n "$FAILED" ]; then
    echo "gpu_check: failed:$FAILED (logs under $OUT/)" >&2
    exit 1
fi
