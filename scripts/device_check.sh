#!/usr/bin/env bash
# The GPU path (CUDA, mixed precision, DistributedDataParallel under NCCL) in one short run, for a
# session whose task is lent a device machine (the `status` tool says so). Two steps:
#   here:        bash scripts/device_check.sh fetch
#                (the wheels the device image lacks, for its Python 3.12, into .whl/: ignored, ~9 MB)
#   the device:  run(command="bash scripts/device_check.sh", carry=[".whl"], timeout_s=480)
# It prints PASS/FAIL per check and leaves $OUT/device_check.json; see scripts/device_check.py.
# DEVICE=cpu bash scripts/device_check.sh runs the same checks on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="segmentation-models-pytorch==0.6.0 albumentations==2.0.8 albucore==0.0.24 pydantic==2.13.4
pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 simsimd==6.5.16 stringzilla==5.3.2
PyMaxflow==1.3.2"
if [ "${1:-}" = fetch ]; then
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS
    ls .whl
    exit 0
fi
if ! python3 -c "import segmentation_models_pytorch, albumentations, maxflow" 2>/dev/null \
        && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; fi
export PYTHONUNBUFFERED=1
exec python3 scripts/device_check.py --device "${DEVICE:-cuda}" --out "${OUT:-device-check-out}" "$@"
