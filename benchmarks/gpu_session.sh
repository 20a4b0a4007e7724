#!/usr/bin/env bash
# One batched call on a lent GPU machine (no internet there): install the carried wheels, then run
# the GPU tests and benchmarks, or a piece of video training. Results land in $OUT.
#
# Here, once:  mkdir -p .whl .data && cp -r ../shared/data/videos .data/   (both git-ignored)
#   .whl: mamba_ssm (MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE pip wheel --no-deps
#         --no-build-isolation mamba-ssm==2.3.2.post1), pytest, pluggy, iniconfig, safetensors, tqdm,
#         av (cp312 manylinux wheels, `pip download --no-deps --only-binary=:all: --python-version 3.12 ...`)
# On the device (carry .whl and .data/videos):
#   bash benchmarks/gpu_session.sh bench            # GPU tests + ssm_scan + latency + throughput
#   bash benchmarks/gpu_session.sh final            # all gpu tests, 1080p CUDA-graph latency row, pose speed
#   bash benchmarks/gpu_session.sh train MINUTES    # resumable video training into $OUT/video.safetensors
#   SPECS='w4:8:--w-temporal 4|nb3:8:--p-no-blend 0.3' bash benchmarks/gpu_session.sh trainx   # side by side
#     (copy a previous run's video.safetensors + video.opt.pt into runs/ and carry runs/ to resume)
#   bash benchmarks/gpu_session.sh posesweep        # pose presets x loss weights, side by side (SWEEP=...)
#     (carry .whl and .data/pose = a copy of ../shared/data/pose)
#   bash benchmarks/gpu_session.sh soak5 float16    # the GPU soak (then float32 in a second call; RESULTS sections to merge)
#   bash benchmarks/gpu_session.sh pose5            # all gpu tests + GPU pose speed (RESULTS section to merge)
#   bash benchmarks/gpu_session.sh posespeed        # pose presets x playback-speed ranges, trained then scored (SWEEP=...)
#   bash benchmarks/gpu_session.sh realtime3        # pose speed + e2e file->file (RESULTS sections), compiled 1080p row
#   bash benchmarks/gpu_session.sh realtime2        # e2e, the compiled 2160p row alone, the pose step's kernel profile
#   bash benchmarks/gpu_session.sh gputests         # every gpu-marked test (~260 s)
#   bash benchmarks/gpu_session.sh latency9         # the 1080p video latency rows, compiled included (~6 min)
#   bash benchmarks/gpu_session.sh latency19        # the whole latency table, every size, batches 1 and 8 (~10 min)
#   bash benchmarks/gpu_session.sh thr9             # GPU file-to-file throughput (RESULTS section), compiled 1080p row
#   bash benchmarks/gpu_session.sh s11              # every gpu test, then the file-to-file throughput (~8 min)
#   bash benchmarks/gpu_session.sh bound10          # video_bound.py's optimum on the GPU (~7 min; RESULTS section)
#     (carry .data/bound alone: ../shared/data/pairs, the 4 held-out clips of video_quality.py under videos/, and
#      the safetensors wheel under whl/ -- with .whl it would pass the 64 MiB carry limit)
set -uo pipefail
export PYTHONUNBUFFERED=1
if [ "${1:-}" = bound10 ]; then
  python3 -c "import safetensors" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target /tmp/site .data/bound/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD STREAMSSM_RESULTS=$OUT/results_gpu.md STREAMSSM_DATA=$PWD/.data/bound
  timeout 585 python3 benchmarks/video_bound.py --device cuda > "$OUT/bound.log" 2>&1
  rc=$?; echo "rc $rc"; grep -v "lam " "$OUT/bound.log" | tail -45
  exit $rc
fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
export STREAMSSM_RESULTS=$OUT/results_gpu.md   # merge back with: python benchmarks/_results.py merge FILE
case "${1:-bench}" in
  bench)
    timeout 140 python3 -m pytest -m gpu tests/ssm/test_gpu.py tests/test_fast.py -q -p no:cacheprovider --tb=line > "$OUT/gpu_tests.log" 2>&1
    tail -5 "$OUT/gpu_tests.log"
    timeout 150 python3 benchmarks/ssm_scan.py --device cuda > "$OUT/ssm.log" 2>&1; tail -12 "$OUT/ssm.log"
    timeout 240 python3 benchmarks/latency.py --time-budget 200 --video-weights streamssm/weights/video.safetensors \
      --out "$OUT/latency.md" > "$OUT/latency.log" 2>&1; tail -40 "$OUT/latency.log"
    timeout 100 python3 benchmarks/video_throughput.py --device cuda --clip .data/videos/edgetam_05_default_juggle.mp4 \
      --frames 120 > "$OUT/thr.log" 2>&1; tail -8 "$OUT/thr.log"
    ;;
  final)  # every gpu-marked test, the 1080p CUDA-graph row (no compile), pose speed
    timeout 300 python3 -m pytest -m gpu tests -q -p no:cacheprovider --tb=short -x > "$OUT/gpu_tests.log" 2>&1
    tail -30 "$OUT/gpu_tests.log"
    timeout 100 python3 benchmarks/latency.py --time-budget 80 --video-weights streamssm/weights/video.safetensors \
      --sizes 1080p --batches 1 --pose-batches 100000 --no-compile --verbose --no-write --out "$OUT/latency_graph.md" > "$OUT/latency.log" 2>&1
    grep -A12 "Video step, ms" "$OUT/latency.log"; grep -B2 -A6 "Pose step" "$OUT/latency.log"; grep -m3 "Error" "$OUT/latency.log"
    timeout 150 python3 benchmarks/pose_speed.py --device cuda --batches 65536,131072 --steps 30 > "$OUT/pose_speed.log" 2>&1
    grep "B=\|Best" "$OUT/pose_speed.log"
    ;;
  realtime)  # session 3: the new GPU paths -- VideoFilter uint8 graph test, e2e file->file, pose halves, 2160p compiled
    timeout 120 python3 -m pytest -m gpu tests/test_fast.py -q -p no:cacheprovider --tb=short \
      -k "videofilter or uint8 or pose_graph" > "$OUT/gpu_tests.log" 2>&1; tail -8 "$OUT/gpu_tests.log"
    timeout 150 python3 benchmarks/video_throughput.py --device cuda --clip .data/videos/edgetam_05_default_juggle.mp4 \
      --frames 240 > "$OUT/thr.log" 2>&1; tail -8 "$OUT/thr.log"
    timeout 170 python3 benchmarks/pose_speed.py --device cuda --batches 131072,262144 --steps 30 --profile > "$OUT/pose_speed.log" 2>&1
    grep "B=\|Best\|float16 at\|bfloat16 at\|triton_\|Self CUDA" "$OUT/pose_speed.log" | head -40
    timeout 150 python3 benchmarks/latency.py --time-budget 130 --video-weights streamssm/weights/video.safetensors \
      --sizes 2160p --batches 1 --pose-batches 1000 --verbose --no-write --out "$OUT/latency_2160.md" > "$OUT/latency.log" 2>&1
    grep -A12 "Video step, ms" "$OUT/latency.log"; grep -m3 "Error" "$OUT/latency.log"
    ;;
  realtime2)  # e2e on 600-frame inputs; the compiled 2160p row alone; the pose step's kernel profile
    timeout 200 python3 benchmarks/video_throughput.py --device cuda --clip .data/videos/edgetam_05_default_juggle.mp4 \
      --frames 600 > "$OUT/thr.log" 2>&1; tail -8 "$OUT/thr.log"
    timeout 200 python3 benchmarks/latency.py --time-budget 180 --video-weights streamssm/weights/video.safetensors \
      --sizes 2160p,1080p --batches 1 --compiled-only --verbose --no-write --out "$OUT/latency_compiled.md" > "$OUT/latency.log" 2>&1
    grep "s\] " "$OUT/latency.log" | tail -5; grep -m3 "Error" "$OUT/latency.log"
    timeout 150 python3 benchmarks/pose_speed.py --device cuda --batches 131072 --steps 30 --half "" --profile --no-write > "$OUT/pose_speed.log" 2>&1
    grep -B3 -A25 "Self CUDA" "$OUT/pose_speed.log" | cut -c1-160 | head -40
    ;;
  realtime3)  # after the fused SSM readout: pose speed (RESULTS section), e2e (RESULTS section), compiled 1080p row
    timeout 200 python3 benchmarks/pose_speed.py --device cuda --batches 65536,131072,262144 --steps 30 --half float16 \
      > "$OUT/pose_speed.log" 2>&1; grep "B=\|Best\|float16 at" "$OUT/pose_speed.log"
    timeout 200 python3 benchmarks/video_throughput.py --device cuda --clip .data/videos/edgetam_05_default_juggle.mp4 \
      --frames 600 > "$OUT/thr.log" 2>&1; tail -8 "$OUT/thr.log"
    timeout 170 python3 benchmarks/latency.py --time-budget 150 --video-weights streamssm/weights/video.safetensors \
      --sizes 1080p --batches 1 --compiled-only --verbose --no-write --out "$OUT/latency_compiled.md" > "$OUT/latency.log" 2>&1
    grep "s\] " "$OUT/latency.log" | tail -3
    ;;
  latency9)  # session 9, after the guide gain: the 1080p video latency rows, compiled included (RESULTS section)
    timeout 420 python3 benchmarks/latency.py --time-budget 360 --video-weights streamssm/weights/video.safetensors \
      --sizes 1080p --batches 1 --pose-batches 1000 --no-write --out "$OUT/lat.md" > "$OUT/latency.log" 2>&1
    grep -A14 "Video step, ms" "$OUT/latency.log"; grep -m3 "Error" "$OUT/latency.log"
    ;;
  latency19)  # session 19: the whole latency table again (every size, batches 1 and 8; RESULTS section to merge)
    timeout 585 python3 benchmarks/latency.py --time-budget 545 --video-weights streamssm/weights/video.safetensors \
      --out "$OUT/latency.md" > "$OUT/latency.log" 2>&1
    echo "rc $?"; grep -A40 "Video step, ms" "$OUT/latency.log" | head -60; grep -m3 "Error" "$OUT/latency.log"
    ;;
  thr9)  # session 9: the GPU file-to-file throughput (RESULTS section to merge), then the compiled 1080p row again
    timeout 250 python3 benchmarks/video_throughput.py --device cuda --clip .data/videos/edgetam_05_default_juggle.mp4 \
      --frames 600 > "$OUT/thr.log" 2>&1; tail -8 "$OUT/thr.log"
    timeout 200 python3 benchmarks/latency.py --time-budget 150 --video-weights streamssm/weights/video.safetensors \
      --sizes 1080p --batches 1 --compiled-only --verbose --no-write --out "$OUT/latency_compiled.md" > "$OUT/latency.log" 2>&1
    grep "s\] " "$OUT/latency.log" | tail -3
    ;;
  s11)  # session 11, after the processed-only fade gain: every gpu-marked test, then the (processed-only) GPU
        # file-to-file throughput (RESULTS section to merge)
    timeout 330 python3 -m pytest -m gpu tests -q -p no:cacheprovider --tb=short > "$OUT/gpu_tests.log" 2>&1
    tail -8 "$OUT/gpu_tests.log"
    timeout 230 python3 benchmarks/video_throughput.py --device cuda --clip .data/videos/edgetam_05_default_juggle.mp4 \
      --frames 600 > "$OUT/thr.log" 2>&1; tail -8 "$OUT/thr.log"
    ;;
  gputests)
    timeout 580 python3 -m pytest -m gpu tests -q -p no:cacheprovider --tb=short > "$OUT/gpu_tests.log" 2>&1
    tail -30 "$OUT/gpu_tests.log"
    ;;
  train2)  # two video trainings side by side: w_temporal ${2:-4} and ${3:-8}, ${4:-7.5} minutes each
    for wt in "${2:-4}" "${3:-8}"; do
      python3 -m streamssm.cli train video --data .data/videos -o "$OUT/video_w$wt.safetensors" --minutes "${4:-7.5}" \
        --steps 2400 --workers 7 --batch 12 --w-temporal "$wt" --no-progress > "$OUT/train_w$wt.log" 2>&1 &
    done
    wait; for f in "$OUT"/train_w*.log; do tail -n 4 "$f"; done
    ;;
  trainx)  # session 6: resumable video trainings side by side, SPECS="name:minutes:extra args|..." (spaces in args ok);
    # each resumes from runs/train_NAME/ when it holds a previous piece (copy that piece's $OUT/train_NAME there, carry it)
    IFS='|' read -ra specs <<< "${SPECS:-w4:8:--w-temporal 4}"
    for spec in "${specs[@]}"; do
      IFS=: read -r name mins extra <<< "$spec"
      mkdir -p "$OUT/train_$name"; cp runs/train_$name/video.* "$OUT/train_$name/" 2>/dev/null
      # shellcheck disable=SC2086
      python3 -m streamssm.cli train video --data .data/videos -o "$OUT/train_$name/video.safetensors" --minutes "$mins" \
        --steps 2400 --workers 7 --batch 12 $extra --resume --no-progress > "$OUT/train_$name.log" 2>&1 &
    done
    wait; for f in "$OUT"/train_*.log; do echo "== $f"; tail -n 4 "$f"; done
    ;;
  flow2)  # session 4, after the pyramidal flow: every gpu test, the CUDA-graph 1080p/2160p rows (no compile), e2e
    timeout 300 python3 -m pytest -m gpu tests -q -p no:cacheprovider --tb=short > "$OUT/gpu_tests.log" 2>&1
    tail -8 "$OUT/gpu_tests.log"
    timeout 120 python3 benchmarks/latency.py --time-budget 100 --video-weights streamssm/weights/video.safetensors \
      --sizes 1080p,2160p --batches 1 --pose-batches 1000 --no-compile --verbose --no-write --out "$OUT/latency_graph.md" \
      > "$OUT/latency.log" 2>&1; grep -A12 "Video step, ms" "$OUT/latency.log"; grep -m3 "Error" "$OUT/latency.log"
    timeout 150 python3 benchmarks/video_throughput.py --device cuda --clip .data/videos/edgetam_05_default_juggle.mp4 \
      --frames 600 > "$OUT/thr.log" 2>&1; tail -8 "$OUT/thr.log"
    ;;
  flow2c)  # the compiled + graph 1080p and 2160p rows
    timeout 560 python3 benchmarks/latency.py --time-budget 520 --video-weights streamssm/weights/video.safetensors \
      --sizes 1080p,2160p --batches 1 --compiled-only --verbose --no-write --out "$OUT/latency_compiled.md" \
      > "$OUT/latency.log" 2>&1; grep "s\] " "$OUT/latency.log" | tail -4; grep -A8 "Video step, ms" "$OUT/latency.log"
    ;;
  train)
    [ -f runs/video.safetensors ] && cp runs/video.safetensors runs/video.opt.pt "$OUT"/ 2>/dev/null
    python3 -m streamssm.cli train video --data .data/videos -o "$OUT/video.safetensors" --minutes "${2:-8}" \
      --steps "${3:-2400}" --workers 15 --batch 12 --resume --no-progress 2>&1 | tail -20
    ;;
  pose22)  # session 22: pose trainings side by side on the CPU cores, resumable pieces (carry .whl, .data/pose and
    # runs/pose22 from the last piece's $OUT); RUNS="name:extra args|..." (default: the new recipe and it without flips)
    export STREAMSSM_DATA=$PWD/.data OMP_NUM_THREADS=${THREADS:-5}
    mkdir -p /tmp/plogs runs/pose22
    IFS='|' read -ra runs <<< "${RUNS:-new:|noflip:--p-flip 0|noconf50:--conf-mix 0.5,0.3,0.1}"
    for spec in "${runs[@]}"; do
      name=${spec%%:*}; extra=${spec#*:}
      cp runs/pose22/"$name".* "$OUT"/ 2>/dev/null
      # shellcheck disable=SC2086
      timeout -s TERM "${PIECE:-540}" python3 -m streamssm.cli train pose --device cpu --steps 8000 --resume $extra \
        -o "$OUT/$name.safetensors" --no-progress > "/tmp/plogs/$name.log" 2>&1 &
    done
    wait; tail -n 3 /tmp/plogs/*.log
    for spec in "${runs[@]}"; do
      name=${spec%%:*}; python3 benchmarks/pose_quality.py --streams 32 --frames 240 --ours-only \
        --weights "$OUT/$name.safetensors" 2>&1 | grep -v "x0.4"
    done
    ;;
  posesweep)
    export STREAMSSM_DATA=$PWD/.data OMP_NUM_THREADS=2
    # SWEEP="name:preset:w_pos:w_vel:w_acc:steps ..." (default: the first sweep); weights to $OUT, logs to /tmp/plogs (printed)
    mkdir -p /tmp/plogs
    for spec in ${SWEEP:-small_a:small:1:1:2:3000 small_p:small:2:1:1:3000 tiny_a:tiny:1:1:2:3000 tiny_p:tiny:2:1:1:3000 base_p:base:2:1:1:3000 small_pp:small:4:1:1:3000}; do
      IFS=: read -r name preset wp wv wa steps <<< "$spec"
      python3 -m streamssm.cli train pose --device cuda --preset "$preset" --w-pos "$wp" --w-vel "$wv" --w-acc "$wa" \
        --steps "$steps" --minutes "${MINUTES:-8}" -o "$OUT/pose_$name.safetensors" --no-progress > "/tmp/plogs/$name.log" 2>&1 &
    done
    wait; tail -n 2 /tmp/plogs/*.log
    ;;
  soak5)  # session 5: the GPU soak with the shipped weights, one dtype per call (float16 | float32), ~6 min
    timeout 560 python3 benchmarks/soak.py --device cuda --dtype "${2:-float16}" --pose-frames 1000000 --pose-step-frames 2000 \
      --video-frames 20000 --checkpoints 40 --pose-seconds 120 --video-seconds 380 > "$OUT/soak.log" 2>&1
    grep "^|" "$OUT/soak.log" | head -8; tail -2 "$OUT/soak.log"
    ;;
  pose5)  # session 5: every gpu test with the new (tiny) pose weights, then the GPU pose speed section
    timeout 330 python3 -m pytest -m gpu tests -q -p no:cacheprovider --tb=short > "$OUT/gpu_tests.log" 2>&1
    tail -15 "$OUT/gpu_tests.log"
    timeout 200 python3 benchmarks/pose_speed.py --device cuda --batches 65536,131072 --steps 30 --half float16 > "$OUT/pose_speed.log" 2>&1
    grep "B=\|Best\|float16 at" "$OUT/pose_speed.log"
    ;;
  posespeed)  # session 5: pose variants with a playback-speed range, side by side, then each scored (ours vs raw)
    export STREAMSSM_DATA=$PWD/.data OMP_NUM_THREADS=2
    # SWEEP="name:preset:speed:steps[:w_pos:w_vel:w_acc[:seed[:lr[:batch]]]] ..."; weights to $OUT, logs to /tmp/plogs (printed)
    mkdir -p /tmp/plogs
    for spec in ${SWEEP:-tiny_w:tiny:0.6,3.0:6000 small_w:small:0.6,3.0:6000 tiny_d:tiny:0.8,1.25:6000 tiny_ww:tiny:0.5,4.0:6000}; do
      IFS=: read -r name preset speed steps wp wv wa seed lr batch <<< "$spec"
      python3 -m streamssm.cli train pose --device cuda --preset "$preset" --speed "$speed" --w-pos "${wp:-2}" \
        --w-vel "${wv:-1}" --w-acc "${wa:-1.5}" --seed "${seed:-0}" --lr "${lr:-0.003}" --batch "${batch:-24}" \
        --steps "$steps" --minutes "${MINUTES:-7}" -o "$OUT/pose_$name.safetensors" --no-progress > "/tmp/plogs/$name.log" 2>&1 &
    done
    wait; tail -n 2 /tmp/plogs/*.log
    for w in "$OUT"/pose_*.safetensors; do
      python3 benchmarks/pose_quality.py --ours-only --weights "$w" --streams 32 --frames 240 > "/tmp/plogs/q_$(basename "$w").log" 2>&1 &
    done
    wait; cat /tmp/plogs/q_*.log | grep "^- "
    ;;
esac
ls -la "$OUT"
