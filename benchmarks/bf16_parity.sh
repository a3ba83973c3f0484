#!/usr/bin/env bash
# Issue 15's bf16 learning parity, prepared for a CPU with native bf16 matrix products
# (AMX-BF16 or AVX512-BF16; `usbpo` refuses --precision bf16 elsewhere) or a GPU (--device
# cuda: pass DEVICE=cuda). Same grids in fp32 and bf16, one after the other on the same machine:
#   1. InvertedPendulum-v4, USB-PO and MBPO (ALGOS_IP), 3 seeds, STEPS_IP env steps (default
#      15000, the paper preset's budget), with the env steps each seed needs to first reach an
#      eval return of 900;
#   2. Hopper-v4, USB-PO, 3 seeds, a short budget (STEPS_HOPPER, default 20000), final and AUC.
# Results go to benchmarks/runs/bf16-parity/; record the tables in RESULTS.md with the machine.
set -euo pipefail
DEVICE="${DEVICE:-cpu}"
STEPS_HOPPER="${STEPS_HOPPER:-20000}"
STEPS_IP="${STEPS_IP:-15000}"
ALGOS_IP="${ALGOS_IP:-usbpo,mbpo}"
ROOT=benchmarks/runs/bf16-parity
lscpu | grep -o -w -E 'amx_bf16|avx512_bf16' | sort -u || true
for precision in fp32 bf16; do
  usbpo compare --envs InvertedPendulum-v4 --algos "$ALGOS_IP" --seeds 3 --steps "$STEPS_IP" \
      --precision "$precision" --device "$DEVICE" --out "$ROOT/ip-$precision"
done
python benchmarks/steps_to_threshold.py "$ROOT/ip-fp32" "$ROOT/ip-bf16" --threshold 900
for precision in fp32 bf16; do
  usbpo compare --envs Hopper-v4 --algos usbpo --seeds 3 --steps "$STEPS_HOPPER" \
      --precision "$precision" --device "$DEVICE" --out "$ROOT/hopper-$precision"
done
