#!/usr/bin/env bash
# Container tests with Docker Swarm (CTest label docker): the same compose
# file deployed with `docker stack deploy`, replicas from deploy.replicas,
# and `docker service scale` of the token stage from 3 to 1 during the run.
source "$(dirname "$0")/lib.sh"
prepare_docker

if [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" != active ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null ||
    { echo "SKIPPED: docker swarm init failed"; exit 77; }
  on_exit "docker network rm docker_gwbridge"  # Made by swarm init; runs last.
  on_exit "docker swarm leave --force"
fi

STACK=sluicetest$$
OUT=$(make_out_dir)
N=40000  # About 7 s of work for 3 token replicas: the scale-down lands mid-run.

# The container of a service's (only or first) task, running or not.
container_of() {
  docker ps -aq --filter "label=com.docker.swarm.service.name=${STACK}_$1" | head -1
}
# Blocks until a container of the service has started since the deploy.
wait_started() {
  wait_for_line 180 " start " docker events --since "$since" --filter type=container \
    --filter event=start --filter "label=com.docker.swarm.service.name=${STACK}_$1"
}

log "docker stack deploy $STACK (N=$N, token replicas 3, result replicas 2)"
since=$(date +%s)
SLUICE_OUT=$OUT N=$N PEERS=3 TOKEN_REPLICAS=3 RESULT_REPLICAS=2 \
  TOKEN_THREADS=20 TOKEN_LATENCY_MS=20 \
  docker stack deploy --resolve-image never -c "$COMPOSE_FILE" "$STACK" >"$OUT/deploy.log" 2>&1
check "stack deploy" test $? = 0
# Cleanups run last-registered first: remove the stack, then the containers
# of its finished tasks (the producer's and the sink's stay behind).
on_exit "docker ps -aq --filter label=com.docker.stack.namespace=$STACK | xargs -r docker rm -f"
on_exit "docker stack rm $STACK"
check "token runs 3 replicas from deploy.replicas" \
  test "$(docker service inspect -f '{{.Spec.Mode.Replicated.Replicas}}' "${STACK}_token")" = 3

wait_started sink
sink=$(container_of sink)
wait_for_line 180 "first message" docker logs -f "$sink"
check "results reach the sink" test $? = 0
check "the job is still running when the scale-down starts" \
  test "$(docker inspect -f '{{.State.Running}}' "$sink")" = true
tokens=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_token")
watch_exits "$OUT" $tokens
started=$(date +%s)
docker service scale "${STACK}_token=1" >/dev/null 2>&1
took=$(($(date +%s) - started))
check "service scale token=1 converged within the grace period (${took} s)" test "$took" -lt 30
remaining=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_token")
stopped=0
for c in $tokens; do
  [[ $remaining == *"$c"* ]] && continue
  await_exit "$OUT" "$c"
  stopped=$((stopped + 1))
  check "scaled-down token task ${c:0:12} drained and exited 0 (got '$EXIT_CODE')" \
    test "$EXIT_CODE" = 0
done
check "two token tasks were stopped" test "$stopped" = 2

code=$(timeout 300 docker wait "$sink")
check "the sink exits 0 (got '$code')" test "$code" = 0
check "the sink printed its summary" bash -c "docker logs '$sink' 2>/dev/null | grep -q 'COMPLETE: $N of $N'"
producer=$(container_of producer)
code=$(timeout 120 docker wait "$producer")
check "the producer exits 0: everything acknowledged (got '$code')" test "$code" = 0
check "the report in the mounted folder is exact" report_is_exact "$OUT/report.json" "$N" dups
check "the ordered output is exact" lines_are_results "$OUT/results.txt" "$N"
finish
