#!/usr/bin/env bash
# Runs every Go fuzz target of netloom (func FuzzXxx in a *_test.go file)
# for a short time, one after another, and stops at the first failure.
#
#   ./fuzz.sh            # 10,000 inputs per target
#   ./fuzz.sh 1000000x   # or NETLOOM_FUZZTIME=1000000x ./fuzz.sh
#   ./fuzz.sh 2m         # a duration works too, but see below
#
# Prefer a count ("Nx") to a duration: with a duration, Go before 1.27
# can fail a target with a bare "context deadline exceeded" as the time
# runs out, a race in its fuzz coordinator (go.dev/issue/75804), not a
# crash; no input is written then. A count has no deadline. This script
# says so when it sees that failure.
#
# NETLOOM_FUZZMINIMIZETIME (default 0: off) is how long the fuzzer may
# spend minimizing each new input; a short run otherwise spends most of its
# time minimizing (go test's default is 60s per input). A failing input is
# written to the package's testdata/fuzz/FuzzXxx/ either way and then runs
# as a seed in `go test ./...`.
# NETLOOM_FUZZPARALLEL (default: go test's, GOMAXPROCS) limits the workers.
# NETLOOM_FUZZ, an extended regular expression matching whole names, picks
# targets (e.g. NETLOOM_FUZZ='FuzzHandle.*|FuzzAuth').
set -euo pipefail
cd "$(dirname "$0")"

fuzztime=${1:-${NETLOOM_FUZZTIME:-10000x}}
minimize=${NETLOOM_FUZZMINIMIZETIME:-0}
only=${NETLOOM_FUZZ:-.*}
parallel=()
if [ -n "${NETLOOM_FUZZPARALLEL:-}" ]; then
	parallel=(-parallel "$NETLOOM_FUZZPARALLEL")
fi

# Every fuzz target as "./pkg FuzzName", found in the test files.
targets=$(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . |
	sed -E 's#^(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+)\(.*#\1 \2#' | grep -E " ($only)\$" | sort -u)
if [ -z "$targets" ]; then
	echo "fuzz.sh: no fuzz target matches ${only}" >&2
	exit 1
fi

n=$(wc -l <<<"$targets")
i=0
while read -r pkg name; do
	i=$((i + 1))
	echo "fuzz.sh: [$i/$n] $name in $pkg for $fuzztime"
	corpus="$pkg/testdata/fuzz/$name"
	before=$({ ls "$corpus" 2>/dev/null || true; } | wc -l)
	log=$(mktemp)
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "${parallel[@]}" "$pkg" 2>&1 | tee "$log"; then
		after=$({ ls "$corpus" 2>/dev/null || true; } | wc -l)
		if [ "$after" = "$before" ] && grep -qx '    context deadline exceeded' "$log"; then
			echo "fuzz.sh: FAILED: $name in $pkg stopped with Go's fuzz coordinator race at the end of a duration (go.dev/issue/75804), no input was written: run with a count instead, e.g. ./fuzz.sh 100000x" >&2
		else
			echo "fuzz.sh: FAILED: $name in $pkg (the failing input is under $corpus/; rerun it with: go test -run '^$name\$' $pkg)" >&2
		fi
		rm -f "$log"
		exit 1
	fi
	rm -f "$log"
done <<<"$targets"
echo "fuzz.sh: all $n fuzz targets passed ($fuzztime each)"
