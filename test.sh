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
# test below; before that each target explores 10,000 new inputs
# (NETLOOM_FUZZTIME, default 10000x, a few seconds each; 0 skips it;
# ./fuzz.sh 1000000x alone for longer). A count, not a duration: see
# fuzz.sh. A failure there is a bug found: its input is written under the
# package's testdata/fuzz/ and fails go test until it is fixed.
fuzztime=${NETLOOM_FUZZTIME:-10000x}
if [ "$fuzztime" != 0 ]; then
	./fuzz.sh "$fuzztime"
fi
# Packages run one at a time: the kernel tests of several packages would
# otherwise compete for the two cores of a small box. A failed test fails
# the suite: nothing is retried (a flaky test is a bug to find and fix).
exec go test -count=1 -p 1 -timeout 60m "$@" ./...
