#!/usr/bin/env bash
# Validate the example nginx.conf at the top of the repository with `nginx -t`.
#
# The file names real-world paths (Let's Encrypt certificates, /var/log/nginx); this copies it into
# a throwaway prefix, points those at a fresh self-signed certificate and the temp dir, adds temp
# paths, moves the listen ports to free loopback ports, and runs `nginx -t` there, so it works as
# root or not and touches nothing in /etc or /var.
#
#   bash benchmarks/check_nginx_conf.sh [path/to/nginx.conf]
# Exit 0: nginx accepts the file. 1: nginx rejects it. 2: nginx, openssl or python3 is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
conf=${1:-$root/nginx.conf}

for tool in nginx openssl python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check_nginx_conf: $tool not found (apt-get install -y nginx-light openssl)" >&2
        exit 2
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/jtg-nginx-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Throwaway self-signed certificate for the placeholder host name (valid one day).
openssl req -x509 -nodes -newkey rsa:2048 -days 1 -subj "/CN=jellyfin.example.com" \
    -keyout "$tmp/privkey.pem" -out "$tmp/fullchain.pem" >/dev/null 2>&1

# `nginx -t` binds the listen sockets: move 80/443 (v4 and v6) to free loopback ports so the
# check needs no root and never touches a real web server's ports.
read -r p80 p80v6 p443 p443v6 < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)

# Certificates and logs into the temp dir; temp paths added as the first lines of `http {`.
sed -e "s#/etc/letsencrypt/live/jellyfin.example.com/#$tmp/#g" \
    -e "s#/var/log/nginx/#$tmp/#g" \
    -e "s#listen 80;#listen 127.0.0.1:$p80;#" -e "s#listen \[::\]:80;#listen 127.0.0.1:$p80v6;#" \
    -e "s#listen 443 #listen 127.0.0.1:$p443 #" -e "s#listen \[::\]:443 #listen 127.0.0.1:$p443v6 #" \
    -e "/^http {/a\\
    client_body_temp_path $tmp/body; proxy_temp_path $tmp/proxy; fastcgi_temp_path $tmp/fastcgi;\\
    uwsgi_temp_path $tmp/uwsgi; scgi_temp_path $tmp/scgi;" \
    "$conf" >"$tmp/nginx.conf"

if ! grep -q "$tmp/fullchain.pem" "$tmp/nginx.conf"; then
    echo "check_nginx_conf: certificate placeholder not found in $conf" >&2
    exit 1
fi

if out=$(nginx -t -q -p "$tmp/" -e "$tmp/error.log" -c "$tmp/nginx.conf" -g "pid $tmp/nginx.pid;" 2>&1); then
    echo "check_nginx_conf: nginx -t accepts $conf"
    [ -n "$out" ] && echo "$out"
    exit 0
fi
echo "check_nginx_conf: nginx -t rejects $conf:" >&2
echo "$out" >&2
exit 1
