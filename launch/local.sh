#!/usr/bin/env bash
# launch/local.sh N COMMAND [ARGS...]
#
# Starts N processes of COMMAND on this machine as one multi-process JAX job whose
# coordinator is 127.0.0.1 (multi-host code, tested without a cluster):
#
#   MEDJAX_LOCAL_DEVICES=2 launch/local.sh 2 \
#       python -m medjax.train --config=configs/sft.py --workdir=/tmp/x
#
# Process i gets MEDJAX_COORDINATOR=127.0.0.1:PORT, MEDJAX_NUM_PROCESSES=N and
# MEDJAX_PROCESS_ID=i in its environment (medjax.train reads them through
# medjax.parallel.initialize; --coordinator/--num_processes/--process_id override).
#
# Environment:
#   MEDJAX_LOCAL_DEVICES=K  each process runs on the CPU with K devices of its own
#                           (JAX_PLATFORMS=cpu and, in XLA_FLAGS,
#                           --xla_force_host_platform_device_count=K).
#                           Unset: the processes see the devices their environment gives them.
#   MEDJAX_PORT=P           coordinator port (default: a free one)
#   MEDJAX_LOG_DIR=DIR      also write process i's output, unprefixed, to DIR/rank<i>.log
#   MEDJAX_KILL_GRACE=S     seconds between SIGTERM and SIGKILL when stopping the others
#                           after a failure (default 10)
#
# Output lines are prefixed with "[i] ". SIGINT and SIGTERM are forwarded to every
# process (medjax.train on several processes: SIGTERM saves a checkpoint at a step all
# processes agree on, then exits 0). When a process exits non-zero, the others are
# stopped (SIGTERM, then SIGKILL after the grace period) and local.sh exits with
# that first non-zero status; otherwise it exits 0 once all processes are done.

set -u

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
N=$1; shift
case $N in ''|*[!0-9]*) echo "local.sh: N must be a positive integer, got '$N'" >&2; exit 2;; esac
[ "$N" -ge 1 ] || { echo "local.sh: N must be at least 1" >&2; exit 2; }

PORT=${MEDJAX_PORT:-}
if [ -z "$PORT" ]; then
  PY=$(command -v python3 || command -v python)
  PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
fi
GRACE=${MEDJAX_KILL_GRACE:-10}
LOG_DIR=${MEDJAX_LOG_DIR:-}
[ -z "$LOG_DIR" ] || mkdir -p "$LOG_DIR"

XLA_FLAGS_BASE=${XLA_FLAGS:-}
if [ -n "${MEDJAX_LOCAL_DEVICES:-}" ]; then
  XLA_FLAGS_BASE=$(printf ' %s' "$XLA_FLAGS_BASE" |
                   sed -E 's/ --xla_force_host_platform_device_count=[0-9]+//g')
  XLA_FLAGS_BASE="${XLA_FLAGS_BASE# } --xla_force_host_platform_device_count=$MEDJAX_LOCAL_DEVICES"
  XLA_FLAGS_BASE=${XLA_FLAGS_BASE# }
fi

prefix() {  # prefix each line with the rank (and copy it to the rank's log)
  if [ -n "$LOG_DIR" ]; then
    tee "$LOG_DIR/rank$1.log" | sed -u "s/^/[$1] /"
  else
    sed -u "s/^/[$1] /"
  fi
}

PIDS=()     # the N processes; each leads a process group of its own (set -m below)
FILTERS=()  # their output filters, outside those groups
FIFOS=$(mktemp -d "${TMPDIR:-/tmp}/medjax_local.XXXXXX")

alive() {
  local p out=()
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && out+=("$p"); done
  echo "${out[@]:-}"
}

forward() {  # forward a signal to every process still running (not to their children)
  local p
  echo "[local.sh] forwarding SIG$1 to the processes" >&2
  for p in $(alive); do kill -s "$1" "$p" 2>/dev/null; done
}

kill_groups() {  # SIGKILL each process and whatever it started
  local p
  for p in "${PIDS[@]}"; do kill -9 -- "-$p" 2>/dev/null; done
}

stop_all() {  # SIGTERM the rest, then SIGKILL them and their children after the grace period
  local p t=0
  for p in $(alive); do kill -s TERM "$p" 2>/dev/null; done
  while [ -n "$(alive)" ] && [ "$t" -lt $((GRACE * 10)) ]; do sleep 0.1; t=$((t + 1)); done
  kill_groups
}

trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'kill_groups; rm -rf "$FIFOS"' EXIT

# Job control: each background job gets a process group of its own, so a terminal's
# Ctrl-C reaches local.sh alone (which forwards it once), and stopping a process also
# stops what it started (e.g. data-loader workers).
set -m
for ((i = 0; i < N; i++)); do
  mkfifo "$FIFOS/$i"
  prefix "$i" < "$FIFOS/$i" &
  FILTERS+=($!)
  if [ -n "${MEDJAX_LOCAL_DEVICES:-}" ]; then
    env MEDJAX_COORDINATOR="127.0.0.1:$PORT" MEDJAX_NUM_PROCESSES="$N" MEDJAX_PROCESS_ID="$i" \
        PYTHONUNBUFFERED=1 JAX_PLATFORMS=cpu XLA_FLAGS="$XLA_FLAGS_BASE" "$@" \
        > "$FIFOS/$i" 2>&1 &
  else
    env MEDJAX_COORDINATOR="127.0.0.1:$PORT" MEDJAX_NUM_PROCESSES="$N" MEDJAX_PROCESS_ID="$i" \
        PYTHONUNBUFFERED=1 "$@" > "$FIFOS/$i" 2>&1 &
  fi
  PIDS+=($!)
done

STATUS=0
declare -A DONE=()
while [ "${#DONE[@]}" -lt "$N" ]; do
  for ((i = 0; i < N; i++)); do
    [ -n "${DONE[$i]:-}" ] && continue
    kill -0 "${PIDS[$i]}" 2>/dev/null && continue
    wait "${PIDS[$i]}"; rc=$?
    DONE[$i]=$rc
    if [ "$rc" -ne 0 ] && [ "$STATUS" -eq 0 ]; then
      STATUS=$rc
      echo "[local.sh] process $i exited with status $rc; stopping the others" >&2
      stop_all
    fi
  done
  sleep 0.2
done
kill_groups  # leftovers of finished processes would hold their output open
wait "${FILTERS[@]}" 2>/dev/null
exit "$STATUS"
