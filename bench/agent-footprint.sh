#!/usr/bin/env bash
# Measures gpufleet-agent's CPU and memory while it streams at 1 Hz to a local collector.
#   bench/agent-footprint.sh BIN_DIR SECONDS [agent args...]
# e.g. bench/agent-footprint.sh target/release 60 --simulate 8
#      bench/agent-footprint.sh target/release 60            # real GPUs through NVML
# Prints CPU seconds used, average CPU %, and RSS (current and peak) of the agent process.
set -euo pipefail
bin=$1; secs=$2; shift 2
port=$(( 20000 + RANDOM % 20000 ))
data=$(mktemp -d)
"$bin/gpufleet" serve --listen "127.0.0.1:$port" --data-dir "$data" 2>"$data/serve.log" &
serve=$!
trap 'kill $serve $agent 2>/dev/null; rm -rf "$data"' EXIT
sleep 1
"$bin/gpufleet-agent" run --collector "http://127.0.0.1:$port" --interval 1s --node-name footprint "$@" 2>"$data/agent.log" &
agent=$!
sleep 5 # let it start and settle
hz=$(getconf CLK_TCK)
read -r u0 s0 < <(awk '{print $14, $15}' /proc/$agent/stat)
t0=$(date +%s.%N)
sleep "$secs"
read -r u1 s1 < <(awk '{print $14, $15}' /proc/$agent/stat)
t1=$(date +%s.%N)
rss=$(awk '/VmRSS/{print $2}' /proc/$agent/status)
hwm=$(awk '/VmHWM/{print $2}' /proc/$agent/status)
printf 'agent args: %s\n' "$*"
awk -v u0="$u0" -v s0="$s0" -v u1="$u1" -v s1="$s1" -v hz="$hz" -v t0="$t0" -v t1="$t1" -v rss="$rss" -v hwm="$hwm" 'BEGIN {
  cpu = (u1 + s1 - u0 - s0) / hz; wall = t1 - t0
  printf "wall %.1f s, cpu %.3f s, avg cpu %.3f %% of one core, rss %d KiB, peak rss %d KiB\n", wall, cpu, 100 * cpu / wall, rss, hwm
}'
"$bin/gpufleet" nodes --collector "http://127.0.0.1:$port" | head -5
