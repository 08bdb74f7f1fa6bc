#!/usr/bin/env bash
# Container tests with docker-compose (CTest label docker): the documented
# command with independently scaled stages, and a scale-down during a run.
source "$(dirname "$0")/lib.sh"
prepare_docker

PROJECT=sluicetest$$
compose() { docker-compose -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }
on_exit "compose down -v --remove-orphans -t 5"

# --- The documented command: token=4, result=2, exit code from the sink, ---
# --- on a fresh checkout: nothing prepared, the output in a named volume. ---
OUT=$(make_out_dir)
log "compose up --scale token=4 --scale result=2 --exit-code-from sink (N=2000)"
N=2000 PEERS=4 timeout 600 docker-compose -p "$PROJECT" -f "$COMPOSE_FILE" \
  up --no-build --scale token=4 --scale result=2 --exit-code-from sink >"$OUT/up.log" 2>&1
rc=$?
check "compose job with token=4 and result=2 exits 0, no folder prepared" test "$rc" = 0
check "the sink's summary is in the output" grep -q "COMPLETE: 2000 of 2000" "$OUT/up.log"
docker cp "$(compose ps -q sink)":/out/. "$OUT/" >/dev/null 2>&1
check "the report in the sink's volume is exact" report_is_exact "$OUT/report.json" 2000
check "the ordered output is result_0..result_1999" lines_are_results "$OUT/results.txt" 2000
check "the sink ran as its own user, not root" \
  test "$(docker inspect -f '{{.Config.User}}' "$(compose ps -q sink)")" = sluice
busy=0
shares=""
for c in $(compose ps -q token); do
  n=$(docker logs "$c" 2>&1 | grep -o 'processed_0_token":[0-9]*' | tail -1 | cut -d: -f2)
  shares="$shares ${n:-none}"
  [ "${n:-0}" -gt 0 ] && busy=$((busy + 1))
done
# --peers 4: the producer sends nothing until all four token workers are
# ready, so every one of them takes part from the first frame on.
check "four token containers ran and each did work (items:$shares)" \
  test "$(compose ps -q token | wc -l)" = 4 -a "$busy" = 4
check "no container is left running" \
  test -z "$(docker ps -q --filter label=com.docker.compose.project="$PROJECT")"
compose down -v -t 5 >/dev/null 2>&1

# --- Scale token from 3 to 1 mid-run: the stopped workers drain, exit 0 ---
# --- within the stop grace period, and the job completes exactly.       ---
OUT=$(make_out_dir)
# About 7 s of work for 3 token workers (20 threads x 10 ms mean each), so
# that the scale-down lands mid-run; the last worker then needs ~17 s more.
N=40000
export SLUICE_OUT=$OUT N PEERS=3 TOKEN_THREADS=20 TOKEN_LATENCY_MS=20
log "compose up -d --scale token=3 (N=$N), then --scale token=1 mid-run"
compose up -d --no-build --scale token=3 --scale result=2 >"$OUT/up.log" 2>&1 ||
  { cat "$OUT/up.log"; check "compose up -d" false; finish; }
wait_for_line 120 "first message" docker-compose -p "$PROJECT" -f "$COMPOSE_FILE" logs -f --no-color sink
check "results reach the sink" test $? = 0
tokens=$(compose ps -q token)
check "the job is still running when the scale-down starts" \
  test "$(docker inspect -f '{{.State.Running}}' "$(compose ps -q sink)")" = true
watch_exits "$OUT" $tokens
started=$(date +%s)
# Only the token service: a plain `up` also starts every service that is
# not running, and a producer that had already finished would start again
# with a new stream and wait for a sink that is gone.
compose up -d --no-build --no-recreate --no-deps --scale token=1 token >>"$OUT/up.log" 2>&1
took=$(($(date +%s) - started))
remaining=$(compose ps -q token)
stopped=0
for c in $tokens; do
  [[ $remaining == *"$c"* ]] && continue
  await_exit "$OUT" "$c"
  stopped=$((stopped + 1))
  check "stopped token worker ${c:0:12} exited 0 (got '$EXIT_CODE')" test "$EXIT_CODE" = 0
done
check "two token workers were stopped" test "$stopped" = 2
check "they stopped within the 30 s grace period (${took} s)" test "$took" -lt 30
sink=$(compose ps -q sink)
code=$(timeout 300 docker wait "$sink")
check "the sink exits 0 ($code)" test "$code" = 0
check "the report is exact (replays counted as duplicates)" report_is_exact "$OUT/report.json" "$N" dups
check "the ordered output is exact" lines_are_results "$OUT/results.txt" "$N"
producer=$(compose ps -q producer)
producer_code=$(timeout 120 docker wait "$producer")
check "the producer exits 0 (everything acknowledged; got '$producer_code')" test "$producer_code" = 0
[ "$producer_code" = 0 ] || docker logs --tail 40 "$producer" 2>&1 | sed 's/^/  producer| /'
finish
