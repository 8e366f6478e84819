#!/usr/bin/env bash
# Opens test/browser.html in headless Chromium, served with the repository root from a
# loopback port; passes if the page's title becomes "ok: ...". Needs the package built
# (bindings/js/build.sh) and Chromium.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$root" >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
for _ in $(seq 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
title=$(timeout 120 chromium --headless=new --no-sandbox --disable-gpu --virtual-time-budget=10000 \
  --dump-dom "http://127.0.0.1:$port/bindings/js/test/browser.html" 2>/dev/null \
  | sed -n 's:.*<title>\(.*\)</title>.*:\1:p')
echo "browser: $title"
[[ "$title" == ok:* ]]
