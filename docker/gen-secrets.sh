#!/bin/sh
# Creates the secret files that docker/compose.yaml mounts (database passwords and the API
# token), each a random 32-character line. Existing files are kept, so the passwords stay those
# the database volumes were initialised with. The directory is private to its owner (0700);
# the files inside are 0644 because Compose bind-mounts them unchanged and the servers read
# them as their own users (postgres, mysql), whose ids differ from the host's.
set -eu
cd "$(dirname "$0")"
mkdir -p secrets
chmod 0700 secrets
for name in pg_admin.pw mysql_root.pw payment.pw order.pw warehouse.pw token; do
    f=secrets/$name
    if [ -s "$f" ]; then
        continue
    fi
    pw=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c1-32)
    printf '%s\n' "$pw" >"$f"
    chmod 0644 "$f"
    echo "created docker/$f"
done
