#!/usr/bin/env bash
# Runs netloom's whole test suite: unit tests, kernel tests in network
# namespaces and the multi-node integration tests. Needs root (namespaces,
# nftables, TUN) and installs the Debian packages the tests use.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
	echo "test.sh: run as root (the tests build clusters in network namespaces)" >&2
	exit 1
fi

packages=(iproute2 nftables wireguard-tools wireguard-go iperf3 iputils-ping iputils-arping tcpdump socat conntrack procps chromium)
if command -v apt-get >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# --no-install-recommends: wireguard-tools would otherwise pull a kernel.
	apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

go vet ./...
# The fuzz targets' seeds and every input they ever failed on run in go
# test below. Fuzzing itself explores at random, so it runs only when
# asked: NETLOOM_FUZZTIME=3s ./test.sh (or ./fuzz.sh 2m alone).
if [ -n "${NETLOOM_FUZZTIME:-}" ]; then
	./fuzz.sh "$NETLOOM_FUZZTIME"
fi
# Packages run one at a time: the kernel tests of several packages would
# otherwise compete for the two cores of a small box. A failed test fails
# the suite: nothing is retried (a flaky test is a bug to find and fix).
exec go test -count=1 -p 1 -timeout 60m "$@" ./...
