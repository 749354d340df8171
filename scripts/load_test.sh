#!/usr/bin/env bash
# Load test of `lightcap serve` on 127.0.0.1 with wrk (Debian's package): SECONDS of CONNECTIONS
# concurrent clients posting a mix of good images (the example scenes) and hostile bodies
# (a truncated PNG, a PNG whose header claims 30000x30000 pixels, text sent as an image, a body
# over --max-body-mb). Prints requests per second, latency percentiles, the answers by kind and
# status, and the server's resident memory after warm-up and at the end. Fails when a good
# request got anything but 200, a hostile one got a 5xx or 200, or memory grew more than 10%
# and then, in a second window as long, more than 5% again (a leak keeps growing; one late step of
# the allocator, such as an arena first touched, does not).
#   scripts/load_test.sh [SECONDS] [CONNECTIONS] [WARMUP]   (default 600 s, 16 connections, 30 s)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-600}
CONNECTIONS=${2:-16}
WARMUP=${3:-30}
command -v wrk >/dev/null || { echo "load_test: wrk is missing (apt-get install wrk)" >&2; exit 2; }
LIGHTCAP=${LIGHTCAP:-.build/release/lightcap}
[ -x "$LIGHTCAP" ] || swift build -c release --product lightcap >/dev/null
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

# The bodies.
cp examples/scene1.png examples/scene2.png examples/scene3.png "$work/"
head -c 300 examples/scene1.png > "$work/truncated.png"
python3 - "$work/huge.png" <<'PY'
import struct, sys, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
PY
echo "this is not an image" > "$work/text.txt"
head -c 1200000 /dev/urandom > "$work/oversized.bin"

BODIES=(good:image/png:"$work/scene1.png" good:image/png:"$work/scene2.png" good:image/png:"$work/scene3.png"
  truncated:image/png:"$work/truncated.png" huge:image/png:"$work/huge.png" wrongtype:image/png:"$work/text.txt"
  oversized:application/octet-stream:"$work/oversized.bin")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$LIGHTCAP" serve --port "$port" --max-body-mb 1 --max-megapixels 50 > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$work/server.log"; echo "load_test: the server did not start" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
# Warm-up with the same mix (the allocator's arenas and the workers' sessions grow to their working
# size in the first 30 s or so), then the memory the soak starts from.
load() { wrk -t 2 -c "$CONNECTIONS" -d "$1s" --timeout 10s -s scripts/load_test.lua "http://127.0.0.1:$port" -- "${BODIES[@]}"; }
load "$WARMUP" > /dev/null
rss_start=$(rss)
load "$SECONDS_RUN" > "$work/wrk.out"
rss_end=$(rss)
rss_again=$rss_end
if [ "$rss_end" -gt $(( rss_start * 110 / 100 )) ]; then
  load "$SECONDS_RUN" > /dev/null
  rss_again=$(rss)
  echo "resident memory grew over 10%; after a second window of ${SECONDS_RUN} s: ${rss_again} kB"
fi
kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
echo "lightcap serve, $CONNECTIONS connections, ${SECONDS_RUN} s after ${WARMUP} s of warm-up, $(nproc) cores: $cpu"
grep -E "^(Requests/sec|latency_ms|requests )" "$work/wrk.out"
grep "^count " "$work/wrk.out" | sort -k2,2 -k3,3n | awk '{printf "  %-10s %s %8d\n", $2, $3, $4}'
echo "resident memory: ${rss_start} kB after warm-up, ${rss_end} kB at the end"
echo "the server's log: $(wc -l < "$work/server.log") lines, $(grep -c ' error ' "$work/server.log" || true) at level error"
python3 - "$work/wrk.out" "$rss_start" "$rss_end" "$rss_again" <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
counts = {}
for line in lines:
    if line.startswith("count "):
        _, kind, status, n = line.split()
        counts[(kind, int(status))] = int(n)
problems = []
good = sum(n for (k, s), n in counts.items() if k == "good")
if good == 0:
    problems.append("no good request was answered")
problems += [f"{n} good requests answered {s}" for (k, s), n in counts.items() if k == "good" and s != 200]
problems += [f"{n} {k} requests answered {s}" for (k, s), n in counts.items() if k != "good" and (s >= 500 or s == 200)]
start, end, again = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if end > 1.10 * start and again > 1.05 * end:
    problems.append(f"resident memory grew from {start} kB to {end} kB (over 10%), then to {again} kB (over 5% more)")
for p in problems:
    print("load_test: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
