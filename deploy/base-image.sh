#!/usr/bin/env bash
# Makes debian:bookworm-slim available to Docker without an image registry:
# if it is not there already and cannot be pulled, builds it with debootstrap
# (minbase) from Debian's package mirror and imports it with `docker import`.
# Nothing in Sluice's build pulls an image beyond this one tag.
set -euo pipefail
IMAGE=${BASE_IMAGE:-debian:bookworm-slim}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
if timeout 20 docker pull -q "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
echo "base-image: $IMAGE cannot be pulled; building it with debootstrap" >&2
if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(awk '/^deb .*bookworm/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
root=$(mktemp -d /tmp/sluice-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >/tmp/sluice-debootstrap.log 2>&1 ||
  { echo "base-image: debootstrap failed; see /tmp/sluice-debootstrap.log" >&2; exit 69; }
# Keep images small, as the official slim image does.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
echo "base-image: imported $IMAGE" >&2
