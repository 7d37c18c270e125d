#!/usr/bin/env bash
# The launcher behind exp/*/script/*.sh: a tools/ entry point from the repository root with PYTHON (python3), or with
# its torchrun for GPUS > 1 processes per node (NNODES > 1: static rendezvous from NODE_RANK, MASTER_ADDR, MASTER_PORT).
#   tools/launch.sh DEFAULT_GPUS|--single tools/<entry>.py ARGS...     (--single: one process, GPUS etc. not read)
# A bad variable stops here with one line and status 2; numbers must be plain digits (bash arithmetic on a raw value
# would run `a[$(command)]`). An empty *_ROOT or DIST_TIMEOUT means unset, as ${VAR:-default} reads it.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {  # one line, whatever the value holds
  echo "launch.sh: ${1//[^[:print:]]/?}" >&2
  exit 2
}

# whole NAME VALUE MIN MAX WHAT: at most 9 decimal digits (no sign, no leading zero: octal) within [MIN, MAX].
whole() {
  if [[ ! "$2" =~ ^(0|[1-9][0-9]{0,8})$ ]] || (( $2 < $3 || $2 > $4 )); then
    fail "$1=$2: expected $5"
  fi
}

for name in SAVE_ROOT TBLOG_ROOT RESULT_ROOT CITYSCAPES_ROOT CAMVID_ROOT SYNTHETIC_ROOT DIST_TIMEOUT; do
  [[ -n "${!name:-}" ]] || unset "$name"
done
python="${PYTHON:-python3}"
if [[ "$python" == -* ]] || ! command -v -- "$python" >/dev/null; then
  fail "PYTHON=$python: expected the Python interpreter to run (a command or path)"
fi
[[ $# -ge 2 ]] || fail "usage: tools/launch.sh DEFAULT_GPUS|--single tools/<entry>.py ARGS..."
if [[ "$1" == --single ]]; then shift; exec -- "$python" "$@"; fi

gpus="${GPUS:-$1}"
shift
whole GPUS "$gpus" 1 65536 "a whole number of processes per node (1 or more)"
nnodes="${NNODES:-1}"
whole NNODES "$nnodes" 1 65536 "a whole number of nodes (1 or more)"
[[ -z "${NODE_RANK:-}" ]] || whole NODE_RANK "$NODE_RANK" 0 $((nnodes - 1)) "this node's index, 0 to $((nnodes - 1))"
master_port="${MASTER_PORT:-29500}"
whole MASTER_PORT "$master_port" 1 65535 "a TCP port, 1 to 65535"
if [[ -n "${MASTER_ADDR:-}" && ! "$MASTER_ADDR" =~ ^[A-Za-z0-9.:][A-Za-z0-9.:-]*$ ]]; then
  fail "MASTER_ADDR=$MASTER_ADDR: expected a host name or IP address (letters, digits, dots, dashes, colons)"
fi
[[ -z "${DIST_TIMEOUT:-}" ]] || whole DIST_TIMEOUT "$DIST_TIMEOUT" 1 999999999 "a whole number of seconds (1 or more)"

if (( gpus == 1 && nnodes == 1 )); then exec -- "$python" "$@"; fi
rendezvous=(--standalone)
if (( nnodes > 1 )); then
  if [[ -z "${NODE_RANK:-}" || -z "${MASTER_ADDR:-}" ]]; then
    fail "NNODES=$nnodes: set NODE_RANK (this node's index) and MASTER_ADDR (node 0's host name or address)"
  fi
  rendezvous=(--nnodes="$nnodes" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$master_port")
fi
exec -- "$python" -m torch.distributed.run "${rendezvous[@]}" --nproc_per_node="$gpus" "$@"
