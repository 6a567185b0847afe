#!/usr/bin/env bash
# On a machine with NVIDIA GPUs: compares gpufleet-agent with nvidia-smi and measures it.
#   bench/real-gpu.sh BIN_DIR OUT_DIR
# Writes nvidia-smi.xml, probe.json, probe.txt, compare.txt and timings.txt into OUT_DIR.
# Read-only: only queries are run (nvidia-smi -q, --query-gpu; gpufleet-agent probe/run).
set -uo pipefail
bin=$1; out=$2; here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
nvidia-smi -q -x > "$out/nvidia-smi.xml"
nvidia-smi -q > "$out/nvidia-smi.txt"
"$bin/gpufleet-agent" probe --json --state-dir "$out/state" > "$out/probe.json" 2> "$out/probe.err"
"$bin/gpufleet-agent" probe --state-dir "$out/state" > "$out/probe.txt" 2>> "$out/probe.err"
python3 "$here/compare_nvidia_smi.py" "$out/nvidia-smi.xml" "$out/probe.json" > "$out/compare.txt"
fields=name,uuid,serial,pci.bus_id,driver_version,vbios_version,inforom.img,temperature.gpu,temperature.memory,fan.speed,power.draw,power.limit,power.default_limit,memory.used,memory.total,utilization.gpu,utilization.memory,clocks.sm,clocks.mem,clocks.max.sm,clocks_event_reasons.active,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,ecc.errors.uncorrected.volatile.total,persistence_mode
{
  echo "# one full read of all GPUs + host through gpufleet-agent (probe read_ms, 5 runs)"
  for i in 1 2 3 4 5; do
    "$bin/gpufleet-agent" probe --json --window 200ms --state-dir "$out/state" 2>/dev/null | python3 -c 'import json,sys; print("%.2f ms" % json.load(sys.stdin)["read_ms"])'
  done
  echo "# nvidia-smi --query-gpu=<same fields> --format=csv, wall time per run (5 runs)"
  for i in 1 2 3 4 5; do
    s=$(date +%s%N); nvidia-smi --query-gpu=$fields --format=csv,noheader > /dev/null; e=$(date +%s%N)
    echo "$(( (e - s) / 1000 )) us"
  done
  echo "# gpufleet-agent probe process wall time, whole process incl. NVML init (5 runs, --window 0s)"
  for i in 1 2 3 4 5; do
    s=$(date +%s%N); "$bin/gpufleet-agent" probe --json --window 0s --state-dir "$out/state" > /dev/null 2>&1; e=$(date +%s%N)
    echo "$(( (e - s) / 1000 )) us"
  done
  echo "# agent at 1 Hz for 60 s against a local collector"
  "$here/agent-footprint.sh" "$bin" 60
} > "$out/timings.txt" 2>&1
cat "$out/compare.txt" "$out/timings.txt"
