// Package demo builds a local multi-node netloom cluster inside network
// namespaces on one machine. It is used by `netloom demo` and by the
// integration tests.
//
// The picture it builds (prefix "nl-demo", three nodes):
//
//	nl-demo-sw        br0 10.77.0.1/24, the L2 segment (ip_forward off)
//	  |-- node1 <-veth-> nl-demo-node1  eth0 10.77.0.11/24, default via .1
//	  |-- node2 <-veth-> nl-demo-node2  eth0 10.77.0.12/24
//	  '-- node3 <-veth-> nl-demo-node3  eth0 10.77.0.13/24
//	nl-demo-node1-p1, nl-demo-node1-p2, ...  pod namespaces, wired by the
//	                                          netloom CNI plugin run inside
//	                                          their node's namespace
//
// Every node runs `netloom agent` through `ip netns exec`, with its own data
// directory, API socket, run directory and WireGuard interface name under the
// state directory, because all namespaces share one file system.
//
// Everything the package creates (namespaces and the processes it starts) is
// recorded in StateDir/cluster.json as it goes, so that Down can remove it
// all later, also from another process (`netloom demo --down`). Down never
// touches a namespace or process it did not record, and it never creates or
// changes anything in the root network namespace.
package demo
