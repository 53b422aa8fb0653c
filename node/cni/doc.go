// Package cni is netloom's CNI plugin (spec 1.0.0, also serving 0.3.x, 0.4.0
// and 1.1.0 configurations) and the Linux bridge the pods of a node hang on.
//
// The plugin is the netloom binary itself: main.go calls Main when
// CNI_COMMAND is set. It keeps no state of its own. ADD asks the agent over
// its unix socket (api.PathCNIAdd) for the pod's address, the node subnet's
// gateway, the MTU and the bridge name, makes sure the bridge exists with the
// gateway address (EnsureBridge, which the agent calls too), and wires the pod
// with a veth pair: the pod side is CNI_IFNAME with the address and a default
// route via the gateway, the host side is named HostVethName(containerID,
// ifname) and is a port of the bridge. Anything that fails after the agent
// handed out an address is undone (the veth is deleted and the agent is sent
// DEL), so a failed ADD leaves nothing behind.
//
// DEL removes the veth (a missing network namespace or interface is fine) and
// then tells the agent to release the address. When the agent cannot be
// reached, DEL still removes the veth but fails with code 11 (try again
// later): the address is only released by the agent, and the runtime retries
// DEL until it succeeds, so no address leaks while the agent is down.
//
// CHECK asks the agent (api.PathCNICheck) what the attachment should be and
// verifies the pod interface (address, up, MTU), the default route, the host
// veth on the bridge, and the prevResult the runtime passes.
//
// STATUS (spec 1.1.0) reports whether the agent runs and has a pod subnet.
//
// Errors reach the runtime as *types.Error with a one-line message naming the
// thing that is wrong and what to do.
package cni
