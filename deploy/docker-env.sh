#!/usr/bin/env bash
# Makes Docker usable on this machine for Sluice's deploy tests and users:
# installs docker.io and docker-compose if missing (Debian packages), starts
# dockerd in the background if no daemon answers, and makes sure
# debian:bookworm-slim exists (deploy/base-image.sh). Idempotent.
#
# Exit codes: 0 ready; 69 Docker cannot run here (the reason on stderr).
#
# `docker-env.sh --stop` stops the dockerd this script started, if any (the
# tests call it when they are done; a daemon that was already running is
# left alone).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pidfile=/run/sluice-dockerd.pid

if [ "${1:-}" = --stop ]; then
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    # dockerd stops its containers first; give it the time it needs.
    timeout 60 tail --pid="$pid" -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
    echo "docker-env: stopped the dockerd it had started (pid $pid)" >&2
  fi
  rm -f "$pidfile"
  exit 0
fi

need=()
command -v docker >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v iptables >/dev/null || need+=(iptables)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "docker-env: need root to install ${need[*]}" >&2; exit 69
  fi
  echo "docker-env: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; } ||
    { echo "docker-env: apt-get could not install ${need[*]}" >&2; exit 69; }
fi

if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "docker-env: no Docker daemon answers and only root may start one" >&2; exit 69
  fi
  echo "docker-env: starting dockerd" >&2
  nohup dockerd >/var/log/sluice-dockerd.log 2>&1 &
  echo $! >"$pidfile"
  # dockerd gives no readiness signal but its socket: wait for it to answer.
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 ||
    { echo "docker-env: dockerd did not come up; see /var/log/sluice-dockerd.log" >&2
      tail -5 /var/log/sluice-dockerd.log >&2; exit 69; }
fi

"$here/base-image.sh"
