#!/usr/bin/env bash
# Builds every image the compose stack needs (docker-compose.yml, `maoctl instance install`) on a
# machine that reaches no image registry, from Debian's own packages:
#   base          debootstrap --variant=minbase bookworm + docker import (mirror: the host's apt sources)
#   orchestrator  Dockerfile           } Python in a venv; dependencies from a wheelhouse built here
#   executor      Dockerfile_executor  } (pip wheel -c constraints.txt), served on 127.0.0.1 to the build
#   etcd          images/etcd          Debian's etcd-server, ETCD_* variables as the official image
#   postgres      images/postgres      Debian's postgresql, POSTGRES_USER/PASSWORD/DB as the official image
# Each image carries the label org.mao.inputs=<hash of its inputs> and is skipped when the hash has not
# changed (a new base image changes the hash of the four others). Builds use --network host: the
# engine here runs without a bridge (dockerd --bridge=none), and the wheelhouse is on loopback.
#
# Usage: scripts/images.sh [--force]      (--force: rebuild everything)
# Environment:
#   MAO_IMAGE_PREFIX   tag prefix (default "mao-"): mao-base:bookworm, mao-orchestrator:VERSION,
#                      mao-executor:VERSION, mao-etcd:bookworm, mao-postgres:bookworm
#   DEBIAN_MIRROR      override the mirror debootstrap uses
#   MAO_IMAGES_CACHE   wheelhouse and scratch space (default ~/.cache/mao-images)
# Prints one line per image; the last lines are KEY=image, ready for an .env file.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
SUITE=bookworm
LABEL=org.mao.inputs
FORCE=0
case "${1:-}" in
    --force) FORCE=1 ;;
    "") ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

PREFIX="${MAO_IMAGE_PREFIX:-mao-}"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)"
BASE="${PREFIX}base:$SUITE"
ORCHESTRATOR="${PREFIX}orchestrator:$VERSION"
EXECUTOR="${PREFIX}executor:$VERSION"
ETCD="${PREFIX}etcd:$SUITE"
POSTGRES="${PREFIX}postgres:$SUITE"
CACHE="${MAO_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mao-images}"
PYTHON="$ROOT/.venv/bin/python"
[ -x "$PYTHON" ] || PYTHON=python3
mkdir -p "$CACHE"

step() { printf '[images] %s\n' "$*"; }

host_mirror() {
    # The first http(s) URI that serves suite $1 in the host's apt sources (or $2).
    local uri suite="$1"
    uri="$(
        {
            awk '/^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i=="'"$suite"'") print u} /^$/ {u=""}' \
                /etc/apt/sources.list.d/*.sources 2>/dev/null
            awk '$1=="deb" && $3=="'"$suite"'" {print $2}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
        } | grep -E '^https?://' | head -1
    )" || true
    printf '%s\n' "${uri:-$2}"
}

# sha256 of strings and of files' contents (paths sorted, names included so a rename counts).
inputs_hash() {
    local files=() values=() arg f
    for arg in "$@"; do
        if [ -d "$arg" ]; then
            while IFS= read -r f; do files+=("$f"); done < <(find "$arg" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
        elif [ -f "$arg" ]; then
            files+=("$arg")
        else
            values+=("value $arg")
        fi
    done
    {
        [ "${#values[@]}" -eq 0 ] || printf '%s\n' "${values[@]}"
        [ "${#files[@]}" -eq 0 ] || sha256sum "${files[@]}"
    } | sha256sum | cut -c1-32
}

image_hash() { docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }
image_id() { docker image inspect -f '{{.Id}}' "$1"; }
fresh() { [ "$FORCE" -eq 0 ] && [ "$(image_hash "$1")" = "$2" ]; }

# -- base -----------------------------------------------------------------------------------------
build_base() {
    local hash mirror security rootfs
    hash="$(inputs_hash "suite=$SUITE" variant=minbase include=ca-certificates base-v1)"
    if fresh "$BASE" "$hash"; then
        step "$BASE: up to date"
        return
    fi
    mirror="${DEBIAN_MIRROR:-$(host_mirror "$SUITE" http://deb.debian.org/debian)}"
    security="$(host_mirror "$SUITE-security" http://deb.debian.org/debian-security)"
    rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$rootfs'" EXIT
    trap 'exit 130' INT TERM  # so that the EXIT trap runs
    step "$BASE: debootstrap --variant=minbase $SUITE from $mirror (a few minutes)"
    if ! debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$mirror" \
        >"$CACHE/debootstrap.log" 2>&1; then
        tail -20 "$CACHE/debootstrap.log" >&2
        step "ERROR: debootstrap failed (log: $CACHE/debootstrap.log)"
        exit 1
    fi
    # The same suites as the host: security and point-release updates, not just the release.
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
        "$mirror" "$SUITE" "$mirror" "$SUITE" "$security" "$SUITE" >"$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    # Images install packages with apt-get; recommends stay out, and no docs in the layers.
    printf 'APT::Install-Recommends "false";\n' >"$rootfs/etc/apt/apt.conf.d/90mao-no-recommends"
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change "LABEL $LABEL=$hash" --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
        - "$BASE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    step "$BASE: imported"
}

# -- wheelhouse, served on loopback -----------------------------------------------------------------
WHEEL_PID=""
WHEELHOUSE_URL=""
serve_wheelhouse() {
    local wheels="$CACHE/wheelhouse" port stamp
    [ -n "$WHEEL_PID" ] && return
    mkdir -p "$wheels"
    # The project's own wheel is not needed (the Dockerfiles copy the source); its build backend is.
    # Skipped when pyproject.toml and the pins are those of the last successful run.
    stamp="$(inputs_hash pyproject.toml constraints.txt wheelhouse-v1)"
    if [ "$(cat "$wheels/.stamp" 2>/dev/null)" = "$stamp" ]; then
        step "wheelhouse: up to date ($wheels)"
    else
        step "wheelhouse: pip wheel -c constraints.txt (cached in $wheels)"
        rm -f "$wheels/.stamp"
    fi
    if [ "$(cat "$wheels/.stamp" 2>/dev/null)" != "$stamp" ] && ! "$PYTHON" -m pip wheel -q --disable-pip-version-check -c constraints.txt -w "$wheels" \
        "setuptools>=68" wheel -r <("$PYTHON" - <<'PY'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
) >"$CACHE/pip-wheel.log" 2>&1; then
        tail -20 "$CACHE/pip-wheel.log" >&2
        step "ERROR: pip wheel failed (log: $CACHE/pip-wheel.log)"
        exit 1
    fi
    printf '%s\n' "$stamp" >"$wheels/.stamp"
    # The Dockerfiles' default port when free: the address is part of the dependency layer's cache key.
    port="$("$PYTHON" - <<'PY'
import socket
for port in (8765, 0):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(s.getsockname()[1])
    break
PY
)"
    "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >"$CACHE/wheelhouse-http.log" 2>&1 &
    WHEEL_PID=$!
    trap 'kill "$WHEEL_PID" 2>/dev/null || true' EXIT
    trap 'exit 130' INT TERM
    WHEELHOUSE_URL="http://127.0.0.1:$port/"
    for _ in $(seq 50); do
        curl -fsS -o /dev/null "$WHEELHOUSE_URL" 2>/dev/null && return
        sleep 0.2
    done
    step "ERROR: the wheelhouse server did not answer on $WHEELHOUSE_URL"
    exit 1
}

# build TAG HASH DOCKERFILE CONTEXT [--build-arg ...]
build() {
    local tag="$1" hash="$2" dockerfile="$3" context="$4"
    shift 4
    if fresh "$tag" "$hash"; then
        step "$tag: up to date"
        return
    fi
    step "$tag: docker build -f $dockerfile"
    if ! docker build --network host --label "$LABEL=$hash" --build-arg "BASE_IMAGE=$BASE" "$@" \
        -f "$dockerfile" -t "$tag" "$context" >"$CACHE/build-${tag//[:\/]/_}.log" 2>&1; then
        tail -30 "$CACHE/build-${tag//[:\/]/_}.log" >&2
        step "ERROR: building $tag failed (log: $CACHE/build-${tag//[:\/]/_}.log)"
        exit 1
    fi
    step "$tag: built"
}

build_base
base_id="$(image_id "$BASE")"
# README.md is copied too (pyproject.toml names it), but only as package metadata: leaving it out of the
# hash keeps a documentation change from rebuilding the images.
sources=(pyproject.toml constraints.txt maoctl.py orchestrator executor ctl .dockerignore)
for role in orchestrator executor; do
    if [ "$role" = orchestrator ]; then tag="$ORCHESTRATOR" file=Dockerfile; else tag="$EXECUTOR" file=Dockerfile_executor; fi
    hash="$(inputs_hash "base=$base_id" "$file" "${sources[@]}")"
    if fresh "$tag" "$hash"; then
        step "$tag: up to date"
        continue
    fi
    serve_wheelhouse
    build "$tag" "$hash" "$file" . --build-arg "WHEELHOUSE=$WHEELHOUSE_URL"
done
for service in etcd postgres; do
    if [ "$service" = etcd ]; then tag="$ETCD"; else tag="$POSTGRES"; fi
    build "$tag" "$(inputs_hash "base=$base_id" "images/$service")" "images/$service/Dockerfile" "images/$service"
done

printf 'MAO_ORCHESTRATOR_IMAGE=%s\nMAO_EXECUTOR_IMAGE=%s\nMAO_ETCD_IMAGE=%s\nMAO_POSTGRES_IMAGE=%s\n' \
    "$ORCHESTRATOR" "$EXECUTOR" "$ETCD" "$POSTGRES"
