#!/usr/bin/env bash
# One batched call on the GPU machine (see the device notes in README): install the carried wheels,
# run the GPU tests, the SSM scan benchmark and (optionally) a piece of video training.
#   bash benchmarks/gpu_session.sh [train_minutes]
# Results land in $OUT (RESULTS sections in $OUT/results_gpu.md, weights in $OUT/video.safetensors).
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
export STREAMSSM_RESULTS=$OUT/results_gpu.md
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
python3 -c "from streamssm._info import info_lines; print('\n'.join(info_lines()))"
timeout 120 python3 -m pytest -m gpu tests/ssm/test_gpu.py -q -p no:cacheprovider 2>&1 | tail -5
timeout 150 python3 benchmarks/ssm_scan.py --device cuda 2>&1 | tail -12
if [ "${1:-0}" != "0" ]; then
  [ -f "$OUT/../video.safetensors" ] || true
  [ -f runs/video.safetensors ] && cp runs/video.safetensors runs/video.opt.pt "$OUT"/ 2>/dev/null
  python3 -m streamssm.cli train video --data .data/videos -o "$OUT/video.safetensors" --minutes "$1" \
    --steps "${2:-3000}" --workers 14 --resume --no-progress 2>&1 | tail -40
fi
ls -la "$OUT"
