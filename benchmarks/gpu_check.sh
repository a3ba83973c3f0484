#!/usr/bin/env bash
# Issue 15's GPU check, as one prepared script for a lent GPU machine (the `device` tool runs it
# from the repository root; figures go to $OUT, default ./gpu-out). Under 8 minutes on an H100
# by design: the seed axis alone (no S-process or mbrl-lib comparison), early stage only.
#   1. the machine: GPU, torch, CUDA;
#   2. S = 1, 5, 20 Hopper-v4 seeds as one agent, MBPO and USB-PO, fp32 (TF32 off);
#   3. the same with --precision bf16 at S = 1 and 20 (autocast bf16, TF32 on).
# Target (issue 15): at S = 20 each seed at least half the env steps/s of S = 1.
set -euo pipefail
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/machine.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0))" | tee -a "$OUT/machine.txt"
python -c "import usbpo_cli" 2>/dev/null || python -m pip install -q --no-deps -e .
git rev-parse --short HEAD 2>/dev/null | tee -a "$OUT/machine.txt" || true
python benchmarks/speed.py --grid --device cuda --scaling 1,5,20 --stages early \
    --json "$OUT/scaling_fp32.json" 2>&1 | tee "$OUT/scaling_fp32.log"
python benchmarks/speed.py --grid --device cuda --precision bf16 --scaling 1,20 --stages early \
    --json "$OUT/scaling_bf16.json" 2>&1 | tee "$OUT/scaling_bf16.log"
