#!/usr/bin/env bash
# Sets up everything and runs the demo: IMP, PrAC and the random-subset baseline, two seeds
# each, on real Fashion-MNIST; retrains their sparsest tickets and ends with the verdict.
# Arguments go to tools/demo.py, except --no-apt: never call apt (also PRAC_NO_APT=1).
set -euo pipefail
cd "$(dirname "$0")"
NO_APT=${PRAC_NO_APT:-0}
ARGS=()
for arg in "$@"; do
    if [ "$arg" = "--no-apt" ]; then NO_APT=1; else ARGS+=("$arg"); fi
done
bash setup.sh
DEBIAN_COPY=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -e "$DEBIAN_COPY" ]; then
    if [ "$NO_APT" != 0 ]; then
        echo "not calling apt (--no-apt / PRAC_NO_APT); the demo will try torchvision's download of Fashion-MNIST"
    elif command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "about to run apt-get update and apt-get install dataset-fashion-mnist (Debian's offline copy of"
        echo "Fashion-MNIST, ~30 MB); pass --no-apt or set PRAC_NO_APT=1 to skip this"
        (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
            || echo "apt could not install it; the demo will try torchvision's download"
    fi
fi
exec .venv/bin/python tools/demo.py ${ARGS[@]+"${ARGS[@]}"}
