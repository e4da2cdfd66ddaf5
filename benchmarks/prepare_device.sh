#!/usr/bin/env bash
# Fill .device/ (git-ignored) with what a benchmark session on a machine without
# network access needs beside the working tree, to be carried there with it:
#   .device/wheels/  PBG 1.0.0 and the pure-Python packages it needs that such a
#                    machine may lack or hold in another version (installed there
#                    with pip --no-index --no-deps --target, see benchmarks/README.md)
#   .device/data/    FB15k-237.tar.xz (2 MiB), read by benchmarks/gpu_fb15k237.py
# Run here, where pip can reach PyPI:  bash benchmarks/prepare_device.sh [SHARED_DATA_DIR]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${1:-$repo/../shared/data}"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python=python3

# torchbiggraph 1.0.0 is a py3-none-any wheel; it imports pkg_resources, which
# setuptools 81 removed, and attrs. numpy, h5py, tqdm and torch come from the
# target machine's own Python.
wheels=(torchbiggraph==1.0.0 setuptools==80.10.2 attrs==26.1.0)

mkdir -p "$repo/.device/wheels" "$repo/.device/data"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$repo/.device/wheels" "${wheels[@]}"

if [ ! -f "$data_dir/FB15k-237.tar.xz" ]; then
    echo "no $data_dir/FB15k-237.tar.xz: pass the folder that holds it" >&2
    exit 2
fi
install -m 0644 "$data_dir/FB15k-237.tar.xz" "$repo/.device/data/"

ls -l "$repo/.device/wheels" "$repo/.device/data"
du -sh "$repo/.device"
