#!/usr/bin/env bash
# A sweep of weighting methods x seeds on SLURM: one array task per (method, seed), each task a
# torchrun job over NODES nodes x GPUS GPUs; the dataset is collected once by a job the array waits for.
#
#   scripts/slurm_sweep.sh submit configs/mt10.yaml            # collect job + array of len(METHODS) x len(SEEDS)
#   METHODS="uniform famo pcgrad" SEEDS="0 1 2" NODES=2 GPUS=4 scripts/slurm_sweep.sh submit configs/mt10.yaml
#   DRY_RUN=1 scripts/slurm_sweep.sh submit configs/mt10.yaml  # print the sbatch commands only
#
# Inside the array SLURM runs `scripts/slurm_sweep.sh task CONFIG [OVERRIDES...]`; the task's run is
# runs/<suite>-<method>-seed<seed> (resumed if it already holds checkpoints, so a requeued task continues).
# The repository, the dataset cache and out_dir must be on a filesystem every node sees.
# Extra sbatch options (partition, account, time): SBATCH_OPTS="--partition=gpu --time=24:00:00".
set -euo pipefail

METHODS=${METHODS:-"uniform famo auto_lambda pcgrad cagrad nash_mtl"}
SEEDS=${SEEDS:-"0 1 2"}
NODES=${NODES:-1}
GPUS=${GPUS:-4}
CPUS=${CPUS:-$((GPUS * 8))}
PORT=${PORT:-29500}
PYTHON=${PYTHON:-python}
SBATCH_OPTS=${SBATCH_OPTS:-}

usage() {
    echo "usage: $0 submit CONFIG [OVERRIDES...] | $0 task CONFIG [OVERRIDES...]" >&2
    exit 2
}

read -r -a method_list <<<"$METHODS"
read -r -a seed_list <<<"$SEEDS"
count=$((${#method_list[@]} * ${#seed_list[@]}))

run() {  # print (DRY_RUN=1) or run a command
    if [[ -n "${DRY_RUN:-}" ]]; then echo "$*" >&2; else "$@"; fi
}

[[ $# -ge 2 ]] || usage
mode=$1
config=$2
shift 2
[[ -f "$config" ]] || { echo "$0: $config: no such config file" >&2; exit 2; }

case "$mode" in
submit)
    export METHODS SEEDS NODES GPUS PORT PYTHON  # the array tasks read the same lists (--export=ALL)
    collect_id=$(run sbatch --parsable $SBATCH_OPTS --job-name=rlmtl-collect --nodes=1 --ntasks=1 --cpus-per-task="$CPUS" \
        --wrap="$PYTHON -m rlmtl collect $config $*")
    [[ -n "${DRY_RUN:-}" ]] && collect_id=COLLECT_JOB_ID
    run sbatch $SBATCH_OPTS --job-name=rlmtl-sweep --dependency=afterok:"$collect_id" --array=0-$((count - 1)) \
        --nodes="$NODES" --ntasks-per-node=1 --gpus-per-node="$GPUS" --cpus-per-task="$CPUS" \
        --export=ALL \
        "$0" task "$config" "$@"
    ;;
task)
    index=${SLURM_ARRAY_TASK_ID:?"task mode runs inside a SLURM array job (SLURM_ARRAY_TASK_ID)"}
    (( index < count )) || { echo "$0: array index $index >= $count (methods x seeds)" >&2; exit 2; }
    method=${method_list[$((index / ${#seed_list[@]}))]}
    seed=${seed_list[$((index % ${#seed_list[@]}))]}
    head_node=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | head -n 1 || echo localhost)
    read -r suite out_dir < <($PYTHON -c 'import sys; from rlmtl.config import load_config
c = load_config(sys.argv[1], sys.argv[2:]); print(c.env.suite, c.out_dir)' "$config" "$@")
    name="${suite}-${method}-seed${seed}"
    resume=()
    [[ -f "$out_dir/$name/checkpoints/last" ]] && resume=(--resume)
    # one torchrun per node (srun), c10d rendezvous on the first node; torchrun starts GPUS ranks per node
    run srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run \
        --nnodes="$NODES" --nproc-per-node="$GPUS" \
        --rdzv-backend=c10d --rdzv-endpoint="$head_node:$PORT" --rdzv-id="${SLURM_JOB_ID:-0}-$index" \
        -m rlmtl train "$config" "${resume[@]}" --no-progress \
        weighting.name="$method" train.seed="$seed" name="$name" train.device=cuda "$@"
    ;;
*)
    usage
    ;;
esac
