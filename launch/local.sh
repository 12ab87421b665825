#!/usr/bin/env bash
# Run one command as N cooperating JAX processes on this machine (a multi-host run in miniature).
#
# Each process gets DPR_JAX_COORDINATOR / DPR_JAX_NUM_PROCESSES / DPR_JAX_PROCESS_ID, which
# dpr_jax.distributed.maybe_initialize() turns into jax.distributed.initialize(). On CPU,
# --devices-per-process D gives every process D forced host devices; on a multi-GPU machine,
# --gpus-per-process G gives process i the GPUs i*G .. i*G+G-1. Output goes to one log per process.
# If one process fails the others are stopped and the script exits with that process's status.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/local.sh N [options] -- COMMAND [ARGS...]

Run COMMAND as N processes of one multi-process JAX job on this machine.

Options:
  --devices-per-process D  CPU run: JAX_PLATFORMS=cpu and D forced host devices per process
  --gpus-per-process G     GPU run: process i sees GPUs i*G..i*G+G-1 (CUDA_VISIBLE_DEVICES)
  --log-dir DIR            one log per process, DIR/process-I.log (default: logs/local-TIMESTAMP)
  --port PORT              coordinator port on 127.0.0.1 (default: a free port)
  --dry-run                print the N commands instead of running them
  -h, --help               show this help

Examples:
  launch/local.sh 2 --devices-per-process 4 -- dpr-jax train --config tiny --workdir runs/t
  launch/local.sh 2 --gpus-per-process 4 -- dpr-jax encode --model runs/t --passages p.tsv --out idx
EOF
}

die() { echo "local.sh: $*" >&2; exit 2; }

# Print a command so that it can be pasted back into a shell.
quote() {
  local out=() arg plain='^[A-Za-z0-9_./:=,@%+-]+$'
  for arg in "$@"; do
    if [[ $arg =~ $plain ]]; then out+=("$arg"); else out+=("${arg@Q}"); fi
  done
  echo "${out[*]}"
}

free_port() {
  "${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

[[ $# -gt 0 ]] || { usage >&2; exit 2; }
case $1 in -h | --help) usage; exit 0 ;; esac
num_processes=$1
shift
[[ $num_processes =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$num_processes'"

dry_run=0 devices_per_process="" gpus_per_process="" log_dir="" port=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    --devices-per-process) devices_per_process=${2:?--devices-per-process needs a value}; shift ;;
    --gpus-per-process) gpus_per_process=${2:?--gpus-per-process needs a value}; shift ;;
    --log-dir) log_dir=${2:?--log-dir needs a value}; shift ;;
    --port) port=${2:?--port needs a value}; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (the command goes after --)" ;;
  esac
  shift
done
[[ $# -gt 0 ]] || die "no command given (put it after --)"
[[ -z $devices_per_process || $devices_per_process =~ ^[1-9][0-9]*$ ]] || die "--devices-per-process must be a positive integer"
[[ -z $gpus_per_process || $gpus_per_process =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-process must be a positive integer"
command=("$@")
log_dir=${log_dir:-logs/local-$(date +%Y%m%d-%H%M%S)}
port=${port:-$(free_port)}

# The environment of process $1, as VAR=VALUE words for env(1).
process_env() {
  local i=$1 env_words=()
  env_words+=("DPR_JAX_COORDINATOR=127.0.0.1:$port" "DPR_JAX_NUM_PROCESSES=$num_processes" "DPR_JAX_PROCESS_ID=$i")
  if [[ -n $devices_per_process ]]; then
    env_words+=("JAX_PLATFORMS=cpu" "XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$devices_per_process")
  fi
  if [[ -n $gpus_per_process ]]; then
    local first=$((i * gpus_per_process)) ids=() g
    for ((g = first; g < first + gpus_per_process; g++)); do ids+=("$g"); done
    env_words+=("CUDA_VISIBLE_DEVICES=$(IFS=,; echo "${ids[*]}")")
  fi
  printf '%s\n' "${env_words[@]}"
}

if ((dry_run)); then
  for ((i = 0; i < num_processes; i++)); do
    mapfile -t env_words < <(process_env "$i")
    echo "$(quote env "${env_words[@]}" "${command[@]}") > $(quote "$log_dir/process-$i.log") 2>&1 &"
  done
  echo "wait"
  exit 0
fi

mkdir -p "$log_dir"
set -m  # every process gets its own process group, so stopping it stops its children too
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do
    [[ -n $pid ]] && kill -TERM -- "-$pid" 2>/dev/null || true
  done
  local tries alive
  for ((tries = 0; tries < 50; tries++)); do  # up to 5 s to exit cleanly
    alive=0
    for pid in "${pids[@]}"; do [[ -n $pid ]] && kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    [[ -n $pid ]] && kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap 'echo "local.sh: interrupted, stopping all processes" >&2; stop_all; exit 130' INT TERM

for ((i = 0; i < num_processes; i++)); do
  mapfile -t env_words < <(process_env "$i")
  env "${env_words[@]}" "${command[@]}" >"$log_dir/process-$i.log" 2>&1 &
  pids+=("$!")
  echo "local.sh: process $i (pid $!): log $log_dir/process-$i.log" >&2
done
set +m  # groups are set; no job-control chatter from here on

# Poll: the first process to fail stops the rest; otherwise wait until all have finished.
status=0 running=$num_processes
while ((running > 0)); do
  for i in "${!pids[@]}"; do
    pid=${pids[i]}
    [[ -n $pid ]] || continue
    kill -0 "$pid" 2>/dev/null && continue
    rc=0
    wait "$pid" || rc=$?
    pids[i]=""
    running=$((running - 1))
    if ((rc != 0)); then
      echo "local.sh: process $i exited with status $rc; stopping the others. Last lines of its log:" >&2
      tail -n 20 "$log_dir/process-$i.log" >&2 || true
      status=$rc
      stop_all
      for pid in "${pids[@]}"; do [[ -n $pid ]] && { wait "$pid" 2>/dev/null || true; }; done
      running=0
      break
    fi
  done
  ((running > 0)) && sleep 0.2
done
if ((status == 0)); then
  echo "local.sh: all $num_processes processes finished; logs in $log_dir" >&2
fi
exit "$status"
