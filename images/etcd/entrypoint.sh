#!/bin/sh
# etcd's entrypoint: give ETCD_DATA_DIR to the etcd user, then exec the command as that user
# (exec all the way: tini, PID 1, signals etcd itself).
# With TLS the certificates come on a read-only mount owned by the host's users (the key 0600): root
# copies the files the ETCD_*_FILE variables name into a folder only the etcd user reads, and points
# the variables there.
set -eu
copy_for_etcd() {
    # $1: a file from the mount; prints where the etcd user's copy is.
    [ -n "$1" ] || return 0
    target="$PKI_COPY/$(basename "$1")"
    if [ ! -e "$target" ]; then
        cp "$1" "$target"
        chown etcd:etcd "$target"
        chmod 600 "$target"
    fi
    printf '%s' "$target"
}
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$ETCD_DATA_DIR"
    chown -R etcd:etcd "$ETCD_DATA_DIR"
    chmod 700 "$ETCD_DATA_DIR"
    if [ -n "${ETCD_KEY_FILE:-}${ETCD_PEER_KEY_FILE:-}" ]; then
        PKI_COPY=/run/mao-etcd-pki
        rm -rf "$PKI_COPY"
        mkdir -p "$PKI_COPY"
        chown etcd:etcd "$PKI_COPY"
        chmod 700 "$PKI_COPY"
        ETCD_TRUSTED_CA_FILE=$(copy_for_etcd "${ETCD_TRUSTED_CA_FILE:-}")
        ETCD_CERT_FILE=$(copy_for_etcd "${ETCD_CERT_FILE:-}")
        ETCD_KEY_FILE=$(copy_for_etcd "${ETCD_KEY_FILE:-}")
        ETCD_PEER_TRUSTED_CA_FILE=$(copy_for_etcd "${ETCD_PEER_TRUSTED_CA_FILE:-}")
        ETCD_PEER_CERT_FILE=$(copy_for_etcd "${ETCD_PEER_CERT_FILE:-}")
        ETCD_PEER_KEY_FILE=$(copy_for_etcd "${ETCD_PEER_KEY_FILE:-}")
        export ETCD_TRUSTED_CA_FILE ETCD_CERT_FILE ETCD_KEY_FILE
        export ETCD_PEER_TRUSTED_CA_FILE ETCD_PEER_CERT_FILE ETCD_PEER_KEY_FILE
    fi
    exec setpriv --reuid=etcd --regid=etcd --init-groups -- "$0" "$@"
fi
exec "$@"
