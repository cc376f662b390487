#!/bin/sh
# etcd's entrypoint: give ETCD_DATA_DIR to the etcd user, then exec the command as that user
# (exec all the way: tini, PID 1, signals etcd itself).
set -eu
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$ETCD_DATA_DIR"
    chown -R etcd:etcd "$ETCD_DATA_DIR"
    chmod 700 "$ETCD_DATA_DIR"
    exec setpriv --reuid=etcd --regid=etcd --init-groups -- "$0" "$@"
fi
exec "$@"
