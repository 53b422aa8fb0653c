#!/usr/bin/env bash
# Runs every Go fuzz target of netloom (func FuzzXxx in a *_test.go file)
# for a short time, one after another, and stops at the first failure.
#
#   ./fuzz.sh            # 5s per target
#   ./fuzz.sh 2m         # or NETLOOM_FUZZTIME=2m ./fuzz.sh
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

fuzztime=${1:-${NETLOOM_FUZZTIME:-5s}}
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
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "${parallel[@]}" "$pkg"; then
		echo "fuzz.sh: FAILED: $name in $pkg (the failing input is under $pkg/testdata/fuzz/$name/; rerun it with: go test -run '^$name\$' $pkg)" >&2
		exit 1
	fi
done <<<"$targets"
echo "fuzz.sh: all $n fuzz targets passed ($fuzztime each)"
