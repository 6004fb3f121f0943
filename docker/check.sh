#!/usr/bin/env bash
# Builds the CPU image with podman where no container registry is reachable, then runs the smoke preset in it.
#   nohup nice -n 19 bash docker/check.sh > /tmp/docker-check.log 2>&1 &
# Steps (each skipped when already done, so a re-run after a failure resumes):
#   1. podman, runc and debootstrap from Debian (apt), configured as this host needs: the runc runtime (crun
#      fails on hybrid cgroups), cgroupfs, no default ulimits (/etc/containers/containers.conf);
#   2. a local base image, Debian bookworm (Python 3.11) from debootstrap --variant=minbase + podman import,
#      in place of rayproject/ray, which cannot be pulled here;
#   3. docker/Dockerfile.cpu built on it, with the host's CA bundle and pip configuration (index, find-links,
#      constraints, and the local directories they name) mounted read-only into the build, never copied in;
#   4. `python -m services.launch objective=ppo preset=smoke` inside the image (--network=host), timed.
# Needs root (apt, debootstrap). Not run in CI: it downloads and installs for many minutes.
# Environment: IMAGE (default crlhf:cpu), BASE (default localhost/crlhf-base:bookworm), CA_BUNDLE.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-crlhf:cpu}
BASE=${BASE:-localhost/crlhf-base:bookworm}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
stamp() { echo "[$(date -u +%H:%M:%S)] check: $*"; }
[ "$(id -u)" -eq 0 ] || { echo "check: needs root (apt-get, debootstrap, podman storage)" >&2; exit 1; }

# --- 1. podman ------------------------------------------------------------------------------------------
missing=()
for p in podman runc debootstrap; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  stamp "installing ${missing[*]}"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
CONF=/etc/containers/containers.conf
if ! grep -q '^runtime = "runc"' "$CONF" 2>/dev/null; then
  [ -f "$CONF" ] && cp "$CONF" "$CONF.before-crlhf"
  mkdir -p /etc/containers
  cat > "$CONF" <<'CONF'
# Written by crlhf's docker/check.sh (the previous file, if any, is containers.conf.before-crlhf).
# crun fails on this host's hybrid cgroup layout; runc with cgroupfs works. The default ulimits cannot be
# applied inside this VM's limits.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
  stamp "wrote $CONF"
fi
podman --version

# --- 2. base image --------------------------------------------------------------------------------------
if ! podman image exists "$BASE"; then
  rootfs=$(mktemp -d /var/tmp/crlhf-rootfs.XXXXXX)
  stamp "debootstrap --variant=minbase bookworm -> $rootfs"
  start=$SECONDS
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/dev/null
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE"
  rm -rf "$rootfs"
  stamp "base $BASE built in $((SECONDS - start)) s"
fi

# --- 3. the CPU image -----------------------------------------------------------------------------------
# pip on this host reaches its packages through its configuration (index, extra indexes, find-links,
# constraints): write the effective global settings to one file and mount it, with every local directory or
# file it names, read-only into the build. The CA bundle is the one thing pip needs from the system store;
# the Dockerfile sets PIP_CERT to it in its install step only.
PY=$(command -v python3)
PIPCONF=$(mktemp /tmp/crlhf-pip.XXXXXX.conf)
mounts=(-v "$CA_BUNDLE:/run/host-ca.crt:ro" -v "$PIPCONF:/etc/pip.conf:ro")
{
  echo "[global]"
  "$PY" -m pip config list 2>/dev/null | sed -n "s/^global\.\([a-z-]*\)='\(.*\)'$/\1 = \2/p" | grep -v '^cert ' || true
} > "$PIPCONF"
for ref in $("$PY" -m pip config list 2>/dev/null | sed -n "s/^global\.\(find-links\|extra-index-url\|index-url\|constraint\)='\(.*\)'$/\2/p"); do
  path=${ref#file://}
  # A local index's pages link to its files beside simple/ (../../files/...): mount the whole repository.
  [ "$(basename "$path")" = simple ] && path=$(dirname "$path")
  case "$path" in
    /*) [ -e "$path" ] && mounts+=(-v "$path:$path:ro") ;;
  esac
done
# A constraint file may sit in a directory pip also reads its own config from; the path mount covers it.
stamp "pip configuration for the build:"; sed 's/^/    /' "$PIPCONF"
# The host's configuration provides the CPU torch wheel when it has one locally; else keep the PyTorch index.
torch_index=https://download.pytorch.org/whl/cpu
if grep -qE '^(find-links|extra-index-url)' "$PIPCONF"; then torch_index=""; fi

stamp "building $IMAGE on $BASE (podman build, low priority)"
start=$SECONDS
podman build --network=host \
  "${mounts[@]}" \
  --build-arg BASE_IMAGE="$BASE" \
  --build-arg TORCH_INDEX_URL="$torch_index" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  -f docker/Dockerfile.cpu -t "$IMAGE" .
build_s=$((SECONDS - start))
rm -f "$PIPCONF"
# The tag the KubeRay manifests use (deploy/kuberay): crlhf:<package version>-cpu.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
podman tag "$IMAGE" "crlhf:$version-cpu"
# podman leaves an empty mount point behind for each build-time -v; none may hold the host's files.
podman run --rm --network=host "$IMAGE" sh -c 'for f in /run/host-ca.crt /etc/pip.conf; do [ ! -s "$f" ] || { echo "$f is not empty"; exit 1; }; done' \
  || { echo "check: a build-time mount leaked into $IMAGE" >&2; exit 1; }
stamp "no build-time mount left content in the image (CA bundle, pip configuration)"
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
stamp "built $IMAGE in ${build_s} s; size $(numfmt --to=iec-i --suffix=B "$size") ($size bytes)"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "crlhf" || true

# --- 4. smoke run inside the image ------------------------------------------------------------------------
# --network=host: the only network mode that works here. The control plane's default port may be held by a
# run on the host; then the smoke run picks a free one (control.port=0) and says so.
args=(objective=ppo preset=smoke)
if command -v ss >/dev/null && ss -ltn | grep -q ':8321 '; then
  stamp "port 8321 is in use on the host: adding control.port=0"
  args+=(control.port=0)
fi
stamp "running: python -m services.launch ${args[*]} (in $IMAGE)"
start=$SECONDS
podman run --rm --network=host --shm-size=2g "$IMAGE" python -m services.launch "${args[@]}"
stamp "smoke run in the container: $((SECONDS - start)) s (image build ${build_s} s, image size $(numfmt --to=iec-i --suffix=B "$size"))"
