#!/usr/bin/env bash
# Run dpr-jax on a Cloud TPU VM pod slice: create it, install this repository on every worker,
# run one command on all workers at once, fetch the per-worker logs, delete it.
#
# Every worker runs the same command; dpr_jax.distributed.maybe_initialize() detects the TPU VM
# and jax.distributed.initialize() finds the other workers through the TPU metadata, so no
# coordinator flags are needed. Data and run directories should be on GCS (gs://...: every dpr-jax
# path may be one) or on a disk every worker can read; each worker writes its own log, worker 0
# writes summaries and outputs.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh SUBCOMMAND [options] [-- COMMAND [ARGS...]]

Subcommands:
  create   create the TPU VM slice (gcloud compute tpus tpu-vm create)
  setup    copy this repository to every worker and install it in a venv with 'jax[tpu]'
  sync     copy this repository to every worker again (after code changes; no reinstall)
  run      run COMMAND (e.g. dpr-jax train ...) on all workers at once, one log per worker
  logs     fetch the per-worker logs into --log-dir and print their last lines
  delete   delete the TPU VM slice

Options (environment defaults in brackets):
  --name NAME              TPU name [TPU_NAME, default dpr-jax]
  --zone ZONE              zone [TPU_ZONE; default: gcloud's configured zone]
  --project PROJECT        project [GCP_PROJECT; default: gcloud's configured project]
  --accelerator-type TYPE  create: slice type [TPU_TYPE, default v4-32 = 4 hosts]
  --version VERSION        create: TPU software version [TPU_VERSION, default tpu-ubuntu2204-base]
  --spot                   create: a Spot (preemptible) slice
  --python VERSION         setup: Python of the workers' venv, installed with uv [default 3.11]
  --remote-dir DIR         repository copy on each worker, relative to home [default dpr-jax]
  --tag TAG                run/logs: name of the run, logs are TAG-workerN.log [default timestamp / all];
                           letters, digits and . _ - only (it names files and a glob on the workers)
  --env KEY=VALUE          run: extra environment variable for COMMAND (repeatable)
  --detach                 run: start COMMAND in the background on the workers and return
  --log-dir DIR            local log directory [default logs/tpu-NAME]
  --dry-run                print every command instead of running it
  -h, --help               show this help

Example:
  launch/tpu_pod.sh create --zone us-central2-b --accelerator-type v4-32
  launch/tpu_pod.sh setup  --zone us-central2-b
  gsutil cp nq-train.json gs://BUCKET/data/
  launch/tpu_pod.sh run    --zone us-central2-b -- dpr-jax train --config nq \
      --workdir gs://BUCKET/runs/nq --config.data.train=gs://BUCKET/data/nq-train.json
  launch/tpu_pod.sh delete --zone us-central2-b
EOF
}

die() { echo "tpu_pod.sh: $*" >&2; exit 2; }

quote() {
  local out=() arg plain='^[A-Za-z0-9_./:=,@%+-]+$'
  for arg in "$@"; do
    if [[ $arg =~ $plain ]]; then out+=("$arg"); else out+=("${arg@Q}"); fi
  done
  echo "${out[*]}"
}

# Run a command, or only print it with --dry-run.
run() {
  if ((dry_run)); then quote "$@"; else "$@"; fi
}

[[ $# -gt 0 ]] || { usage >&2; exit 2; }
subcommand=$1
shift
case $subcommand in
  -h | --help) usage; exit 0 ;;
  create | setup | sync | run | logs | delete) ;;
  *) die "unknown subcommand '$subcommand' (create|setup|sync|run|logs|delete)" ;;
esac

name=${TPU_NAME:-dpr-jax} zone=${TPU_ZONE:-} project=${GCP_PROJECT:-}
accelerator_type=${TPU_TYPE:-v4-32} version=${TPU_VERSION:-tpu-ubuntu2204-base} spot=0
python_version=3.11 remote_dir=dpr-jax tag="" log_dir="" detach=0 dry_run=0 extra_env=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --name) name=${2:?--name needs a value}; shift ;;
    --zone) zone=${2:?--zone needs a value}; shift ;;
    --project) project=${2:?--project needs a value}; shift ;;
    --accelerator-type) accelerator_type=${2:?--accelerator-type needs a value}; shift ;;
    --version) version=${2:?--version needs a value}; shift ;;
    --spot) spot=1 ;;
    --python) python_version=${2:?--python needs a value}; shift ;;
    --remote-dir) remote_dir=${2:?--remote-dir needs a value}; shift ;;
    --tag) tag=${2:?--tag needs a value}; shift ;;
    --env)
      [[ ${2:-} =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs KEY=VALUE"
      extra_env+=("$2"); shift ;;
    --detach) detach=1 ;;
    --log-dir) log_dir=${2:?--log-dir needs a value}; shift ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (the command goes after --)" ;;
  esac
  shift
done
command=("$@")
log_dir=${log_dir:-logs/tpu-$name}
[[ $subcommand == run && ${#command[@]} -eq 0 ]] && die "run: no command given (put it after --)"
[[ $subcommand != run && ${#command[@]} -gt 0 ]] && die "$subcommand takes no command"
[[ $remote_dir =~ ^[A-Za-z0-9_./-]+$ && $remote_dir != /* ]] || die "--remote-dir must be a plain path relative to home"
# The tag names files on the workers and, for `logs`, a remote glob that scp may hand to a shell:
# only a plain file name is safe in all three places, so nothing else is taken.
[[ -z $tag || $tag =~ ^[A-Za-z0-9_.-]+$ ]] || die "--tag must be letters, digits, '.', '_' or '-' (got $(quote "$tag"))"

gcloud_tpu=(gcloud compute tpus tpu-vm)
location=()
[[ -n $zone ]] && location+=("--zone=$zone")
[[ -n $project ]] && location+=("--project=$project")
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
archive=dpr-jax-src.tar.gz

# Run a shell snippet on every worker at once.
on_all_workers() {
  run "${gcloud_tpu[@]}" ssh "$name" --worker=all "${location[@]}" --command="$1"
}

# The files to ship: what git tracks plus untracked files it does not ignore (so .gitignore'd
# runs, caches and data stay home); without git, everything but the usual local clutter.
copy_repository() {
  local tmp=/tmp/dpr-jax-upload
  ((dry_run)) || tmp=$(mktemp -d)
  if git -C "$repo_root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    ((dry_run)) && echo "# $tmp/files: git -C $(quote "$repo_root") ls-files -co --exclude-standard"
    ((dry_run)) || git -C "$repo_root" ls-files -co --exclude-standard |
      while IFS= read -r f; do [[ -e $repo_root/$f ]] && printf '%s\n' "$f"; done >"$tmp/files"
    run tar -czf "$tmp/$archive" -C "$repo_root" -T "$tmp/files"
  else
    run tar -czf "$tmp/$archive" --exclude=./.git --exclude=./.venv --exclude=./logs --exclude=__pycache__ \
      --exclude=.pytest_cache --exclude='*.egg-info' -C "$repo_root" .
  fi
  run "${gcloud_tpu[@]}" scp "$tmp/$archive" "$name:$archive" --worker=all "${location[@]}"
  on_all_workers "set -e; mkdir -p $remote_dir && tar -xzf $archive -C $remote_dir && rm $archive"
  ((dry_run)) || rm -rf "$tmp"
}

case $subcommand in
  create)
    create=("${gcloud_tpu[@]}" create "$name" "${location[@]}" "--accelerator-type=$accelerator_type" "--version=$version")
    ((spot)) && create+=(--spot)
    run "${create[@]}"
    ;;
  setup)
    copy_repository
    # Ubuntu's python3 may be older than dpr-jax needs: uv installs the requested Python.
    on_all_workers "set -e; [ -x ~/.local/bin/uv ] || curl -LsSf https://astral.sh/uv/install.sh | sh; \
~/.local/bin/uv venv --allow-existing --python $(quote "$python_version") $remote_dir/.venv && \
~/.local/bin/uv pip install --python $remote_dir/.venv/bin/python -e ./$remote_dir 'jax[tpu]' && \
cd $remote_dir && .venv/bin/python -c 'from dpr_jax.distributed import maybe_initialize; maybe_initialize()'"
    ;;
  sync)
    copy_repository
    ;;
  run)
    tag=${tag:-run-$(date +%Y%m%d-%H%M%S)}
    # The worker number comes from the TPU metadata server; it names the worker's log.
    # shellcheck disable=SC2016  # expanded on the worker, not here
    worker_id='$(curl -sf --connect-timeout 5 -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname)'
    env_prefix=""
    ((${#extra_env[@]})) && env_prefix="$(quote env "${extra_env[@]}") "
    command_line="$env_prefix$(quote "${command[@]}")"
    worker_log="logs/$(quote "$tag")-worker\$W.log"
    if ((detach)); then
      on_all_workers "cd $remote_dir && mkdir -p logs && W=$worker_id && \
nohup bash -c $(quote "source .venv/bin/activate && $command_line") > $worker_log 2>&1 < /dev/null & \
echo \"worker \$W: started \"$(quote "$tag")"
      echo "tpu_pod.sh: started '$tag' on all workers; fetch its logs with: $0 logs --name $name --tag $tag" >&2
    else
      # Each worker keeps its own log; the terminal (and $log_dir/$tag.log) gets every worker's
      # output, each line prefixed with the worker number.
      remote="set -o pipefail; cd $remote_dir && source .venv/bin/activate && mkdir -p logs && W=$worker_id && \
$command_line 2>&1 | tee $worker_log | sed -u \"s/^/[worker \$W] /\""
      if ((dry_run)); then
        echo "$(quote "${gcloud_tpu[@]}" ssh "$name" --worker=all "${location[@]}" --command="$remote") 2>&1 | tee $(quote "$log_dir/$tag.log")"
      else
        mkdir -p "$log_dir"
        on_all_workers "$remote" 2>&1 | tee "$log_dir/$tag.log"
      fi
    fi
    ;;
  logs)
    pattern="${tag:-*}-worker*.log"
    run mkdir -p "$log_dir"
    run "${gcloud_tpu[@]}" scp "$name:$remote_dir/logs/$pattern" "$log_dir/" --worker=all "${location[@]}"
    if ((!dry_run)); then
      for f in "$log_dir"/$pattern; do
        [[ -e $f ]] || continue
        echo "==> $f <=="
        tail -n 5 "$f"
      done
    fi
    ;;
  delete)
    run "${gcloud_tpu[@]}" delete "$name" "${location[@]}" --quiet
    ;;
esac
