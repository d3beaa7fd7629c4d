#!/bin/sh
# Entrypoint of the coordinator's container. Compose mounts secrets as they are on the host
# (readable by everyone inside the container, owned by whoever created them), while xacoord
# accepts only secret files that group and others cannot read. So, as root, it copies each
# secret into a private tmpfs owned by the xacoord user with mode 0600, makes sure the data
# volume belongs to that user, and then runs the command as xacoord.
#
# compose.yaml leaves root only CHOWN, SETUID, SETGID (and KILL, for tini to forward a stop
# signal to the daemon): without DAC_OVERRIDE or FOWNER, root
# may write only into directories it owns and change modes only of files it owns, hence the
# order below (fill the directory while it is root's, hand it over last).
set -eu

src=/run/secrets
dst=/run/xacoord

if [ "$(id -u)" != 0 ]; then
    exec "$@"
fi

mkdir -p "$dst"
chown root:root "$dst"
chmod 0700 "$dst"
rm -f "$dst"/token "$dst"/*.pw
for pair in api_token:token payment_pw:payment.pw order_pw:order.pw warehouse_pw:warehouse.pw; do
    install -m 0600 "$src/${pair%%:*}" "$dst/${pair#*:}"
    chown xacoord:xacoord "$dst/${pair#*:}"
done
chown xacoord:xacoord "$dst"

# A new named volume copies the image's directory (already xacoord's); a bind mount may not.
if [ "$(stat -c %U /var/lib/xacoord)" != xacoord ]; then
    chown root:root /var/lib/xacoord
    chmod 0700 /var/lib/xacoord
    chown xacoord:xacoord /var/lib/xacoord
fi

exec setpriv --reuid=xacoord --regid=xacoord --init-groups -- "$@"
