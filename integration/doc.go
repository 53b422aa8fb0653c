// Package integration holds netloom's multi-node tests: the real binary, run
// as root, several nodes and pods in network namespaces built with
// node/demo, real packets and real tools (ping, socat, tcpdump, wg, ip, nft).
//
// Run with `go test -count=1 -v ./integration/` as root; as another user
// every test skips. Each test builds its own cluster under a unique
// namespace prefix ("nlt-" and four hex digits) and removes it, its
// namespaces and its processes, also when it fails.
package integration
