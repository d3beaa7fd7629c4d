#!/bin/sh
# Creates the secret files the containers mount (database passwords and the API token), each a
# random 32-character line, mode 0600 in a directory of mode 0700. Every image reads its secrets
# as root when its container starts (the coordinator's entrypoint then hands private copies to
# the xacoord user), so nobody else needs to read them. Existing files are kept, so the
# passwords stay those the database volumes were initialised with.
# Usage: docker/gen-secrets.sh [DIR]      (default: docker/secrets, never committed)
set -eu
dir=${1:-$(dirname "$0")/secrets}
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
for name in api_token pg_admin_pw mysql_root_pw payment_pw order_pw warehouse_pw; do
    f=$dir/$name
    if [ -s "$f" ]; then
        chmod 0600 "$f"
        continue
    fi
    pw=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c1-32)
    printf '%s\n' "$pw" >"$f.tmp"
    mv "$f.tmp" "$f"
    echo "created $f"
done
