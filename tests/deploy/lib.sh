# tests/deploy/lib.sh: shared by the container tests (sourced).
#
# Prepares Docker (installs and starts it, makes the base image; see
# deploy/docker-env.sh), builds the Sluice image from this tree, runs named
# checks and prints "N passed, N failed" at the end. A machine where Docker
# truly cannot run reports SKIPPED with the reason and exits 77 (CTest's
# skip code), loudly.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPOSE_FILE="$ROOT/deploy/docker-compose.yml"
PASSED=0
FAILED=0
CLEANUPS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

cleanup() {
  local i
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${CLEANUPS[i]}" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
on_exit() { CLEANUPS+=("$1"); }

# check NAME CONDITION-COMMAND...: one named assertion.
check() {
  local name=$1; shift
  if "$@"; then
    log "PASS $name"; PASSED=$((PASSED + 1))
  else
    log "FAIL $name"; FAILED=$((FAILED + 1))
  fi
}

finish() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ] && [ "$PASSED" -gt 0 ]
  exit $?
}

prepare_docker() {
  local out
  if ! out=$("$ROOT/deploy/docker-env.sh" 2>&1); then
    echo "$out"
    echo "SKIPPED: Docker cannot run on this machine (see above)"
    exit 77
  fi
  log "building the sluice image from $ROOT"
  docker build -q -f "$ROOT/deploy/Dockerfile" -t sluice:test "$ROOT" >/dev/null ||
    { echo "FAIL: docker build"; echo "0 passed, 1 failed"; exit 1; }
  export SLUICE_IMAGE=sluice:test
}

# wait_for_line SECONDS PATTERN COMMAND...: true once COMMAND (e.g. a
# `logs -f`) prints a line matching PATTERN; stops COMMAND either way.
wait_for_line() {
  local seconds=$1 pattern=$2; shift 2
  local fifo pid rc
  fifo=$(mktemp -u /tmp/sluice-follow.XXXXXX)
  mkfifo "$fifo"
  "$@" >"$fifo" 2>&1 &
  pid=$!
  timeout "$seconds" grep -m1 -q -- "$pattern" <"$fifo"
  rc=$?
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  rm -f "$fifo"
  return $rc
}

# watch_exits DIR CONTAINER...: records each container's exit code in DIR
# when it exits (a background `docker wait` each), for await_exit.
declare -A EXIT_WATCHER
watch_exits() {
  local dir=$1 c; shift
  for c in "$@"; do
    docker wait "$c" >"$dir/exit.$c" 2>/dev/null &
    EXIT_WATCHER[$c]=$!
  done
}
# await_exit DIR CONTAINER: blocks until it has exited; sets EXIT_CODE.
await_exit() {
  wait "${EXIT_WATCHER[$2]}" 2>/dev/null
  EXIT_CODE=$(cat "$1/exit.$2" 2>/dev/null)
}

# A fresh folder the sink (uid 10001 in the container) can write to.
make_out_dir() {
  local dir
  dir=$(mktemp -d /tmp/sluice-deploy-test.XXXXXX)
  chmod 1777 "$dir"
  on_exit "rm -rf '$dir'"
  echo "$dir"
}

# report_is_exact FILE N [allow-duplicates]
report_is_exact() {
  local file=$1 n=$2 dups=${3:-}
  [ -s "$file" ] || { echo "no report at $file"; return 1; }
  local want=".complete == true and .expected == \$N and .unique == \$N and .missing == 0 and .written == \$N"
  [ -n "$dups" ] || want="$want and .duplicates == 0"
  jq -e --argjson N "$n" "$want" "$file" >/dev/null ||
    { echo "report not exact:"; jq -c '{complete,expected,unique,missing,duplicates,written}' "$file"; return 1; }
}

# lines_are_results FILE N: the ordered output is result_0..result_{N-1}.
lines_are_results() {
  local file=$1 n=$2
  diff -q <(seq 0 $((n - 1)) | sed 's/^/result_/') "$file" >/dev/null ||
    { echo "output differs from result_0..result_$((n - 1))"; return 1; }
}

command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null 2>&1 ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }
