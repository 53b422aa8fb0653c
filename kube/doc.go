// Package kube is netloom's Kubernetes mode: the API server as the source
// of the cluster snapshot (client-go informers for pods, namespaces,
// NetworkPolicies, Services, EndpointSlices and AddressPools; gossip for
// subnet leases and pod addresses), the pure translations of API objects
// into what the rooms read, and the writer of what netloom decides back
// into the API (service load-balancer status, its Node's annotations and
// condition, events), with the permission check of the agent's
// ServiceAccount.
package kube
