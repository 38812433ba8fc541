#!/usr/bin/env bash
# Sets up everything and runs the demo: vanilla IMP vs PrAC IMP on real Fashion-MNIST,
# retrains every ticket of both, and prints the report. Arguments go to tools/demo.py.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null \
        && [ "$(id -u)" = 0 ]; then
    echo "installing Debian's dataset-fashion-mnist ..."
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
        || echo "apt could not install it; the demo will try torchvision's download"
fi
exec .venv/bin/python tools/demo.py "$@"
