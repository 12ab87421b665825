#!/usr/bin/env bash
# One process of a plain multi-node GPU run (no SLURM, no MPI): run this on every node.
#
# Each node runs one process that drives all of that node's GPUs. The process gets
# DPR_JAX_COORDINATOR / DPR_JAX_NUM_PROCESSES / DPR_JAX_PROCESS_ID (read by
# dpr_jax.distributed.maybe_initialize), the XLA GPU flags below and a GPU memory fraction, then
# runs the command. Give the three values explicitly, or --hosts with the node list (the same
# command line on every node: the process id is this node's position in the list and node 0 is
# the coordinator).
set -euo pipefail

# Conservative XLA GPU flags (all accepted by current XLA; see launch/README.md):
#  - latency hiding scheduler: overlap the gradient all-reduce with the backward pass;
#  - cuBLAS instead of Triton for dense matmuls (stable, fast for BERT-sized GEMMs);
#  - combine small all-reduces (one per parameter) into 128 MiB buckets.
DEFAULT_XLA_GPU_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_enable_triton_gemm=false --xla_gpu_all_reduce_combine_threshold_bytes=134217728"

usage() {
  cat <<'EOF'
Usage: launch/multinode_gpu.sh (--coordinator HOST:PORT --num-processes N --process-id I | --hosts H0,H1,... [--port P])
                               [--log FILE] [--mem-fraction F] [--dry-run] -- COMMAND [ARGS...]

Run COMMAND as process I of N of a multi-node JAX job; start it on every node.

Options:
  --coordinator HOST:PORT  address of process 0 (reachable from every node; env DPR_JAX_COORDINATOR)
  --num-processes N        number of nodes/processes (env DPR_JAX_NUM_PROCESSES)
  --process-id I           this node's index, 0..N-1 (env DPR_JAX_PROCESS_ID)
  --hosts LIST             comma-separated node names instead of the three above: N = length,
                           I = position of this host (hostname or hostname -s), coordinator = first
  --port P                 coordinator port with --hosts (default 8476)
  --log FILE               also write the output to FILE (default: only the terminal)
  --mem-fraction F         XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.90)
  --dry-run                print the environment and command instead of running it
  -h, --help               show this help

XLA_FLAGS: DPR_JAX_XLA_GPU_FLAGS replaces the default GPU flags; XLA_FLAGS from the
environment is appended (and wins on conflicts).

Example (2 nodes, run on each):
  launch/multinode_gpu.sh --hosts gpu-a,gpu-b -- dpr-jax train --config nq --workdir /shared/runs/nq \
      --config.data.train=/shared/data/nq-train.json
EOF
}

die() { echo "multinode_gpu.sh: $*" >&2; exit 2; }

quote() {
  local out=() arg plain='^[A-Za-z0-9_./:=,@%+-]+$'
  for arg in "$@"; do
    if [[ $arg =~ $plain ]]; then out+=("$arg"); else out+=("${arg@Q}"); fi
  done
  echo "${out[*]}"
}

coordinator=${DPR_JAX_COORDINATOR:-} num_processes=${DPR_JAX_NUM_PROCESSES:-} process_id=${DPR_JAX_PROCESS_ID:-}
hosts="" port=8476 log_file="" mem_fraction=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90} dry_run=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --coordinator) coordinator=${2:?--coordinator needs HOST:PORT}; shift ;;
    --num-processes) num_processes=${2:?--num-processes needs a value}; shift ;;
    --process-id) process_id=${2:?--process-id needs a value}; shift ;;
    --hosts) hosts=${2:?--hosts needs a list}; shift ;;
    --port) port=${2:?--port needs a value}; shift ;;
    --log) log_file=${2:?--log needs a file}; shift ;;
    --mem-fraction) mem_fraction=${2:?--mem-fraction needs a value}; shift ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (the command goes after --)" ;;
  esac
  shift
done
[[ $# -gt 0 ]] || die "no command given (put it after --)"

if [[ -n $hosts ]]; then
  IFS=, read -r -a host_list <<<"$hosts"
  num_processes=${#host_list[@]}
  coordinator="${host_list[0]}:$port"
  me_long=$(hostname) me_short=$(hostname -s 2>/dev/null || hostname)
  process_id=""
  for i in "${!host_list[@]}"; do
    if [[ ${host_list[i]} == "$me_long" || ${host_list[i]} == "$me_short" ]]; then process_id=$i; fi
  done
  [[ -n $process_id ]] || die "this host ($me_long) is not in --hosts $hosts"
fi
[[ -n $coordinator && -n $num_processes && -n $process_id ]] ||
  die "give --coordinator, --num-processes and --process-id (or --hosts)"
[[ $coordinator =~ ^.+:[0-9]+$ ]] || die "--coordinator must be HOST:PORT, got '$coordinator'"
[[ $num_processes =~ ^[1-9][0-9]*$ ]] || die "--num-processes must be a positive integer"
if ! [[ $process_id =~ ^[0-9]+$ ]] || ((process_id >= num_processes)); then
  die "--process-id must be in 0..$((num_processes - 1)), got '$process_id'"
fi

xla_flags="${DPR_JAX_XLA_GPU_FLAGS:-$DEFAULT_XLA_GPU_FLAGS}${XLA_FLAGS:+ $XLA_FLAGS}"
env_words=(
  "DPR_JAX_COORDINATOR=$coordinator" "DPR_JAX_NUM_PROCESSES=$num_processes" "DPR_JAX_PROCESS_ID=$process_id"
  "XLA_FLAGS=$xla_flags" "XLA_PYTHON_CLIENT_MEM_FRACTION=$mem_fraction"
)

if ((dry_run)); then
  if [[ -n $log_file ]]; then
    echo "$(quote env "${env_words[@]}" "$@") 2>&1 | tee $(quote "$log_file")"
  else
    quote env "${env_words[@]}" "$@"
  fi
  exit 0
fi

echo "multinode_gpu.sh: process $process_id/$num_processes, coordinator $coordinator: $(quote "$@")" >&2
if [[ -n $log_file ]]; then
  mkdir -p "$(dirname "$log_file")"
  env "${env_words[@]}" "$@" 2>&1 | tee "$log_file"
  exit "${PIPESTATUS[0]}"
fi
exec env "${env_words[@]}" "$@"
