#!/usr/bin/env bash
# Runs the token-then-result job on this machine as separate processes:
#
#   producer --> token workers x TOKEN_WORKERS --> hub --> result workers
#            x RESULT_WORKERS --> sink
#
# Every process binds 127.0.0.1 on an ephemeral port or connects to one it
# was told; each is started once the processes it needs printed READY.
# Prints the sink's summary; exits with the sink's exit code; leaves no
# process behind (workers are stopped with SIGTERM, and drain, at the end).
#
# Knobs (environment): N, TOKEN_WORKERS, RESULT_WORKERS, TOKEN_THREADS,
# RESULT_THREADS, TOKEN_LATENCY_MS, RESULT_LATENCY_MS, BIN, OUT_DIR.
set -euo pipefail

N=${N:-1000}
TOKEN_WORKERS=${TOKEN_WORKERS:-3}
RESULT_WORKERS=${RESULT_WORKERS:-2}
TOKEN_THREADS=${TOKEN_THREADS:-10}
RESULT_THREADS=${RESULT_THREADS:-5}
TOKEN_LATENCY_MS=${TOKEN_LATENCY_MS:-10}
RESULT_LATENCY_MS=${RESULT_LATENCY_MS:-5}
BIN=${BIN:-build/bin}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/sluice-demo.XXXXXX)}
mkdir -p "$OUT_DIR"

pids=()
declare -A readers
cleanup() {
  # Anything still running at this point is stopped, then reaped.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD with stdout through a FIFO, waits (at most 20 s)
# for its READY line, and leaves the line's key=value pairs in READY_<key>.
start() {
  local name=$1; shift
  local fifo="$OUT_DIR/$name.fifo"
  mkfifo "$fifo"
  "$@" >"$fifo" 2>"$OUT_DIR/$name.log" &
  pids+=($!)
  local fd line
  exec {fd}<"$fifo"
  if ! read -r -t 20 -u "$fd" line || [[ $line != READY* ]]; then
    echo "run-local: $name did not start; its log:" >&2
    cat "$OUT_DIR/$name.log" >&2
    exit 69
  fi
  cat <&"$fd" >"$OUT_DIR/$name.out" &   # the rest of its stdout
  readers[$name]=$!
  exec {fd}<&-
  rm -f "$fifo"
  unset READY_in READY_out READY_stream READY_acks
  for kv in ${line#READY }; do
    printf -v "READY_${kv%%=*}" '%s' "${kv#*=}"
  done
}

echo "token-then-result: N=$N, $TOKEN_WORKERS token workers x $TOKEN_THREADS threads," \
     "$RESULT_WORKERS result workers x $RESULT_THREADS threads; logs in $OUT_DIR"

start sink "$BIN/sluice-sink" --in "@tcp://127.0.0.1:*" --progress off \
  --acks "@tcp://127.0.0.1:*" \
  --output "$OUT_DIR/results.txt" --ordered --report "$OUT_DIR/report.json"
sink_pid=${pids[-1]}
sink_in=$READY_in
sink_acks=$READY_acks

start hub "$BIN/sluice-stage" --op pass \
  --in "@tcp://127.0.0.1:*" --out "@tcp://127.0.0.1:*"
hub_in=$READY_in
hub_out=$READY_out

for ((i = 1; i <= RESULT_WORKERS; i++)); do
  start "result-$i" "$BIN/sluice-stage" --op result --threads "$RESULT_THREADS" \
    --latency-ms "$RESULT_LATENCY_MS" --in ">$hub_out" --out ">$sink_in" \
    --acks ">$sink_acks"
done

# The producer binds first and waits for all token workers (--peers), so the
# first worker to connect does not receive everything.
start producer "$BIN/sluice-producer" --out "@tcp://127.0.0.1:*" --count "$N" \
  --peers "$TOKEN_WORKERS" --acks ">$sink_acks"
producer_pid=${pids[-1]}
producer_out=$READY_out

for ((i = 1; i <= TOKEN_WORKERS; i++)); do
  start "token-$i" "$BIN/sluice-stage" --op token --threads "$TOKEN_THREADS" \
    --latency-ms "$TOKEN_LATENCY_MS" --in ">$producer_out" --out ">$hub_in"
done

sink_rc=0
wait "$sink_pid" || sink_rc=$?
wait "$producer_pid" || echo "run-local: producer exited with $?" >&2
wait "${readers[sink]}" || true
cat "$OUT_DIR/sink.out"
echo "results: $OUT_DIR/results.txt ($(wc -l <"$OUT_DIR/results.txt") lines), report: $OUT_DIR/report.json"
exit "$sink_rc"
