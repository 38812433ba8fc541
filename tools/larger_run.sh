#!/usr/bin/env bash
# The larger Fashion-MNIST comparison quoted in the README: full Fashion-MNIST (54,000 train,
# 6,000 validation, 10,000 test), ResNet-20s, bf16, 4 rounds x 10 epochs, IMP vs PrAC with
# the same seed, then the final (sparsest) ticket of each retrained, then the report.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/fashion_full}
PY=.venv/bin/python
# --data must hold the files it names: Debian's copy when installed, else data/fashionmnist
# (downloaded there through torchvision when absent)
DATA=/usr/share/datasets/fashion-mnist
if [ ! -e $DATA/train-images-idx3-ubyte.gz ] && [ ! -e $DATA/train-images-idx3-ubyte ]; then
    DATA=data/fashionmnist
    $PY -c "import dataset; dataset.load_fashion_mnist('$DATA', fallback=True)"
fi
COMMON="--data $DATA --dataset fashionmnist --arch res20s --split_file npy_files/fashionmnist-train-val.npy
        --batch_size 128 --lr 0.1 --epochs 10 --decreasing_lr 5,8 --seed 1 --precision bf16 --no_progress --print_freq 1000"
SEARCH="--pruning_times 4 --prune_type rewind_lt --rewind_epoch 1"
$PY main_imp.py $COMMON $SEARCH --save_dir $OUT/imp
$PY main_PrAC_imp.py $COMMON $SEARCH --save_dir $OUT/prac
for run in imp prac; do
    $PY main_train.py $COMMON --init_dir $OUT/$run/final_ticket.pth.tar --mask_dir $OUT/$run/final_ticket.pth.tar \
        --save_dir $OUT/${run}_retrain/final_ticket
done
$PY report.py $OUT/imp $OUT/prac --name IMP PrAC --out $OUT/report
