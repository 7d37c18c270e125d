#!/usr/bin/env bash
# The one launcher behind exp/*/script/*.sh: runs a tools/ entry point from the repository root, with plain python
# for one process, or with torchrun (`python -m torch.distributed.run` of the same interpreter, PYTHON, default
# python3) for several (GPUS processes per node; NNODES > 1 adds torchrun's static rendezvous from NODE_RANK,
# MASTER_ADDR and MASTER_PORT, the same command on every node).
#   tools/launch.sh DEFAULT_GPUS tools/<entry>.py ARGS...
#   tools/launch.sh --single tools/<entry>.py ARGS...     (always one process; GPUS and the rest are not read)
# Every variable is checked before it is used: a bad one stops here with one line on stderr and status 2. Numbers
# must be plain digits (bash arithmetic on a raw value would run `a[$(command)]`). An empty SAVE_ROOT, TBLOG_ROOT,
# RESULT_ROOT, *_ROOT of a dataset or DIST_TIMEOUT means unset, as ${VAR:-default} reads it.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {  # one line, whatever the value holds
  echo "launch.sh: ${1//[^[:print:]]/?}" >&2
  exit 2
}

# whole NAME VALUE MIN MAX WHAT: VALUE is decimal digits (no sign, no leading zero, which bash reads as octal; at
# most 9, so no overflow) within [MIN, MAX]. The arithmetic runs only on a value that passed the pattern.
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
if [[ "$1" == --single ]]; then
  shift
  exec -- "$python" "$@"
fi

gpus="${GPUS:-$1}"
shift
whole GPUS "$gpus" 1 65536 "a whole number of processes per node (1 or more)"
nnodes="${NNODES:-1}"
whole NNODES "$nnodes" 1 65536 "a whole number of nodes (1 or more)"
if [[ -n "${NODE_RANK:-}" ]]; then
  whole NODE_RANK "$NODE_RANK" 0 $((nnodes - 1)) "this node's index, 0 to NNODES-1 = $((nnodes - 1))"
fi
master_port="${MASTER_PORT:-29500}"
whole MASTER_PORT "$master_port" 1 65535 "a TCP port, 1 to 65535"
if [[ -n "${MASTER_ADDR:-}" && ! "$MASTER_ADDR" =~ ^[A-Za-z0-9.:][A-Za-z0-9.:-]*$ ]]; then
  fail "MASTER_ADDR=$MASTER_ADDR: expected a host name or IP address (letters, digits, dots, dashes, colons)"
fi
if [[ -n "${DIST_TIMEOUT:-}" ]]; then
  whole DIST_TIMEOUT "$DIST_TIMEOUT" 1 999999999 "a whole number of seconds (1 or more)"
fi

if (( gpus == 1 && nnodes == 1 )); then
  exec -- "$python" "$@"
fi
if (( nnodes == 1 )); then
  rendezvous=(--standalone)
else
  if [[ -z "${NODE_RANK:-}" || -z "${MASTER_ADDR:-}" ]]; then
    fail "NNODES=$nnodes: set NODE_RANK (this node's index) and MASTER_ADDR (node 0's host name or address)"
  fi
  rendezvous=(--nnodes="$nnodes" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$master_port")
fi
exec -- "$python" -m torch.distributed.run "${rendezvous[@]}" --nproc_per_node="$gpus" "$@"
