#!/usr/bin/env bash
# One prepared accelerator run (< 10 minutes): bert-base encode and train-step throughput and MFU in
# bfloat16 at DPR's shapes, and exact search of 10M x 768 bfloat16 vectors against the HBM roofline.
# Each stage of bench/accelerator_suite.py runs in its own process under a hard time limit, so one
# hang costs one stage; results go to bench/results/accelerator_suite_gpu.{md,json} (TPU: _tpu) and
# BENCHMARKS.md is regenerated (bench/collect.py).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: bench/accelerator_suite.sh [--dry-run] [--out-dir DIR] [--work DIR]

Measure bert-base (random init, config written locally, nothing downloaded) on this machine's
accelerator: encode throughput and MFU (passages of 256 tokens, questions of 32-64), train-step
throughput and MFU (global batch 128, then 4,096 and 1,024 with GradCache), and exact search of
10M x 768 bfloat16 vectors generated on the device, against the HBM and compute rooflines.
Refuses to run when JAX sees no GPU or TPU.

Options:
  --dry-run      every stage at toy size on CPU (about 2 minutes); results under
                 bench/_work/accelerator_suite_dry_run/results, BENCHMARKS.md untouched
  --out-dir DIR  where the results go (default: bench/results, or the dry-run folder)
  --work DIR     scratch folder, emptied first (default: bench/_work/accelerator_suite[_dry_run])
  -h, --help     show this help

Environment: PYTHON (default python3).
USAGE
}

die() { echo "accelerator_suite.sh: $*" >&2; exit 2; }

dry_run=0 out_dir="" work=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    --out-dir) out_dir=${2:?--out-dir needs a value}; shift ;;
    --work) work=${2:?--work needs a value}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mode=()
if ((dry_run)); then
  export JAX_PLATFORMS=cpu
  mode=(--dry-run)
fi

backend=$(timeout 120 "$python" -c 'import jax; print(jax.default_backend())' 2>/dev/null | tail -n 1) ||
  die "JAX did not start (try: $python -c 'import jax; print(jax.devices())')"
if [[ $backend == cpu && $dry_run == 0 ]]; then
  die "JAX sees no GPU or TPU (backend: cpu), and this suite measures accelerators. Check the CUDA/TPU install
(python -c 'import jax; print(jax.devices())'), or run with --dry-run to check every stage at toy size on CPU."
fi

if [[ -z $work ]]; then
  work=bench/_work/accelerator_suite
  ((dry_run)) && work=bench/_work/accelerator_suite_dry_run
fi
if [[ -z $out_dir ]]; then
  out_dir=bench/results
  ((dry_run)) && out_dir=$work/results
fi
rm -rf "$work"
mkdir -p "$work"
echo "accelerator_suite.sh: backend $backend; work in $work; results to $out_dir" >&2

start=$SECONDS
failed=()
stage() {  # stage NAME LIMIT_SECONDS
  local name=$1 limit=$2 rc=0
  echo "== $name (at most ${limit}s)" >&2
  timeout --kill-after=10 "$limit" "$python" bench/accelerator_suite.py "$name" --work "$work" "${mode[@]}" || rc=$?
  if ((rc != 0)); then
    ((rc == 124 || rc == 137)) && echo "accelerator_suite.sh: stage $name hit its ${limit}s limit" >&2
    failed+=("$name")
  fi
}

stage prepare 45   # limits add up to under 10 minutes with start-up and report
stage encode 120
stage train 300
stage search 100
"$python" bench/accelerator_suite.py report --work "$work" --out-dir "$out_dir" --elapsed-s "$((SECONDS - start))" "${mode[@]}"
((dry_run)) || "$python" bench/collect.py
if ((${#failed[@]})); then
  echo "accelerator_suite.sh: stages that did not finish: ${failed[*]} (partial results are in the report)" >&2
  exit 1
fi
echo "accelerator_suite.sh: done in $((SECONDS - start))s" >&2
