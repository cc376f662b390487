#!/usr/bin/env bash
# Builds the staging image of the Kubernetes backend's fetch data mode (docs/backends.md#kubernetes):
# the stage-in and stage-out containers of every pod run it. It holds Debian's static busybox and
# links to the applets the staging scripts use (sh, tar, wget, nc, cat, wc, head, tail, sleep), nothing else,
# and is built offline (docker import), so nothing is downloaded.
#
#   scripts/staging-image.sh registry.lab.internal/mao-staging:1    # then: docker push that tag
#
# Environment: BUSYBOX, the static busybox to use (default /usr/bin/busybox, Debian's busybox-static).
set -euo pipefail

TAG=${1:?usage: scripts/staging-image.sh TAG}
BUSYBOX=${BUSYBOX:-/usr/bin/busybox}
if ! "$BUSYBOX" true 2>/dev/null; then
    echo "staging-image: $BUSYBOX is not a runnable busybox (apt-get install busybox-static)" >&2
    exit 1
fi
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    echo "staging-image: $BUSYBOX is linked dynamically; the image needs a static one (busybox-static)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/tmp" "$work/mao/stage" "$work/mao/ticket"
cp "$BUSYBOX" "$work/bin/busybox"
for applet in sh tar wget nc cat wc head tail sleep; do
    ln -s busybox "$work/bin/$applet"
done
chmod 1777 "$work/tmp"
tar -C "$work" --owner=0 --group=0 --numeric-owner -cf - . |
    docker import \
        --change 'ENV PATH=/bin' \
        --change 'CMD ["sh"]' \
        --change 'LABEL org.opencontainers.image.title=mao-staging' \
        - "$TAG"
