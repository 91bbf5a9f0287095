#!/usr/bin/env bash
# launch/mpirun.sh [MPIRUN OPTIONS...] -- COMMAND [ARGS...]
#
# Runs COMMAND as one multi-process JAX job under Open MPI's mpirun (4.x or 5.x).
#
#   # 2 nodes x 8 GPUs, one process per node (each process drives its node's 8 GPUs):
#   launch/mpirun.sh --hostfile hosts.txt -- \
#       python -m medjax.train --config=configs/sft.py:llama3_70b --workdir=/shared/runs/sft70b
#   # the same with one process per GPU (process i of a node takes GPU i):
#   MEDJAX_PER_NODE=8 launch/mpirun.sh --hostfile hosts.txt -- python -m medjax.train ...
#
# hosts.txt has one node per line ("gpu01" or "gpu01 slots=8"); -H gpu01,gpu02 works too.
# Options before "--" go to mpirun as they are. Added unless already given:
#   -n NODES*MEDJAX_PER_NODE, --map-by ppr:MEDJAX_PER_NODE:node (rank 0 on the first node),
#   --bind-to none (JAX runs many threads per process; mpirun's default binding would pin
#   a process to one core or package), --tag-output (each line prefixed with its rank).
# Every process gets MEDJAX_COORDINATOR=FIRST_NODE:MEDJAX_PORT (Open MPI 5 exports no
# launcher address that JAX could use), plus PATH, LD_LIBRARY_PATH, PYTHONPATH, VIRTUAL_ENV,
# XLA_FLAGS, XLA_PYTHON_CLIENT_MEM_FRACTION and every NCCL_*, JAX_*, MEDJAX_*, HF_* variable
# set here. Rank and process count come from Open MPI's OMPI_COMM_WORLD_* variables
# (medjax.parallel.initialize).
#
# Environment: MEDJAX_PER_NODE (default 1), MEDJAX_PORT (default: random in 20000-59999).
#
# Failures: mpirun stops the whole job when one process exits non-zero and exits non-zero
# itself; a process that dies without mpirun noticing is caught by the others through
# JAX's heartbeat (medjax.train --heartbeat_timeout, default 30 s).

set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
OPTS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do OPTS+=("$1"); shift; done
[ $# -ge 2 ] || usage
shift  # the "--"

PER_NODE=${MEDJAX_PER_NODE:-1}
PORT=${MEDJAX_PORT:-$((20000 + RANDOM % 40000))}

# The nodes, in order, from --hostfile/--machinefile or -H/--host.
HOSTS=()
have_np=0; have_map=0; have_bind=0; have_tag=0
for ((i = 0; i < ${#OPTS[@]}; i++)); do
  opt=${OPTS[$i]}
  next=${OPTS[$((i + 1))]:-}
  case $opt in
    --hostfile|-hostfile|--machinefile|-machinefile)
      while read -r host _; do
        case $host in ''|'#'*) ;; *) HOSTS+=("$host");; esac
      done < "$next";;
    --hostfile=*|--machinefile=*)
      while read -r host _; do
        case $host in ''|'#'*) ;; *) HOSTS+=("$host");; esac
      done < "${opt#*=}";;
    -H|--host|-host)
      IFS=, read -ra hs <<< "$next"; for h in "${hs[@]}"; do HOSTS+=("${h%%:*}"); done;;
    --host=*)
      IFS=, read -ra hs <<< "${opt#*=}"; for h in "${hs[@]}"; do HOSTS+=("${h%%:*}"); done;;
    -n|--n|-np|-c|--np) have_np=1;;
    --map-by|--map-by=*|--npernode|-N|--pernode) have_map=1;;
    --bind-to|--bind-to=*) have_bind=1;;
    --tag-output|--output|--output=*) have_tag=1;;
  esac
done

# Unique nodes, first appearance first.
NODES=()
for h in "${HOSTS[@]+"${HOSTS[@]}"}"; do
  case " ${NODES[*]+"${NODES[*]}"} " in *" $h "*) ;; *) NODES+=("$h");; esac
done
if [ ${#NODES[@]} -eq 0 ]; then  # no host list: this machine, or the SLURM allocation
  if [ -n "${SLURM_JOB_NODELIST:-}" ] && command -v scontrol >/dev/null; then
    mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
  else
    NODES=("$(hostname)")
  fi
fi
FIRST=${NODES[0]}

[ $have_np -eq 1 ] || OPTS+=(-n "$(( ${#NODES[@]} * PER_NODE ))")
[ $have_map -eq 1 ] || OPTS+=(--map-by "ppr:$PER_NODE:node")
[ $have_bind -eq 1 ] || OPTS+=(--bind-to none)
[ $have_tag -eq 1 ] || OPTS+=(--tag-output)

OPTS+=(-x "MEDJAX_COORDINATOR=$FIRST:$PORT")
for v in PATH LD_LIBRARY_PATH PYTHONPATH VIRTUAL_ENV XLA_FLAGS XLA_PYTHON_CLIENT_MEM_FRACTION \
         $(compgen -e | grep -E '^(NCCL_|JAX_|MEDJAX_|HF_)' || true); do
  [ "$v" = MEDJAX_COORDINATOR ] && continue
  [ -n "${!v+x}" ] && OPTS+=(-x "$v")
done

echo "[mpirun.sh] ${#NODES[@]} node(s) x $PER_NODE process(es), coordinator $FIRST:$PORT" >&2
exec mpirun "${OPTS[@]}" "$@"
