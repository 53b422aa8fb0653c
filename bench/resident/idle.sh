#!/bin/bash
# Idle resident memory of the demo cluster's agents and WireGuard companions.
#
# usage: bench/resident/idle.sh BINARY...   (as root; absolute paths)
#
# For each binary in turn: `BINARY demo` (3 nodes, 2 pods each, in network
# namespaces), 30 s after it reports its dashboard, VmRSS in KiB of the
# three agents and the three companions (/proc/PID/status); then Ctrl-C.
# Give the builds to compare interleaved (A B B A) so drift on the machine
# shows. BENCHMARKS.md section 3.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "idle.sh: run as root (the demo builds network namespaces)" >&2; exit 1; }
[ $# -gt 0 ] || { echo "usage: idle.sh BINARY..." >&2; exit 2; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
for bin in "$@"; do
	out=$(mktemp)
	"$bin" demo >"$out" 2>&1 &
	demo=$!
	for _ in $(seq 180); do
		grep -q 'Dashboard:' "$out" && break
		kill -0 "$demo" 2>/dev/null || { cat "$out" >&2; exit 1; }
		sleep 1
	done
	grep -q 'Dashboard:' "$out" || { echo "idle.sh: $bin demo not up after 180 s" >&2; kill -INT "$demo"; wait "$demo" || true; exit 1; }
	sleep 30
	agents="" companions=""
	for pid in $(pgrep -f "^$bin (agent|wg-companion) " | sort -n); do
		case "$(tr '\0' ' ' <"/proc/$pid/cmdline")" in
		"$bin agent "*) agents+=" $(rss "$pid")" ;;
		"$bin wg-companion "*) companions+=" $(rss "$pid")" ;;
		esac
	done
	echo "$bin agents:$agents companions:$companions"
	kill -INT "$demo"
	wait "$demo" || true
	rm -f "$out"
done
