package objects

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Annotations with which ServiceView reports what the agent decided for a
// Service (its addresses go to spec.clusterIP and
// status.loadBalancer.ingress).
const (
	AnnouncedByAnnotation = "netloom.io/announced-by" // the node announcing the VIP
	PendingAnnotation     = "netloom.io/pending"      // why an address is missing
	ConflictAnnotation    = "netloom.io/conflict"     // the address lost to an older service
)

// The views below turn a stored document and what the agent knows of the
// object into the document `netloom get` shows, the Kubernetes way: facts
// the agent decides go where Kubernetes keeps them (status, spec.nodeName,
// spec.clusterIP). Table reads the result. A view is authoritative for the
// fields it fills: a field the agent has no value for is removed, so a
// stored document that carries one (a Pod exported from Kubernetes, the
// output of `get -o yaml` applied again) does not show a stale value.

// PodView returns the Pod document `netloom get pods` shows: raw (the
// stored Pod, or nil for a pod attached by CNI that has none, in which case
// a Pod with apiVersion, kind, metadata.namespace and metadata.name is
// built) with status.podIP and status.podIPs set to ip and spec.nodeName to
// node, the address and node the pod attached with ("" when it has not).
func PodView(raw json.RawMessage, namespace, name, ip, node string) (json.RawMessage, error) {
	if len(raw) == 0 {
		raw = json.RawMessage(`{"apiVersion":"v1","kind":"Pod"}`)
	}
	return editDoc(raw, "pod view "+namespace+"/"+name, func(doc map[string]any) {
		meta := object(doc, "metadata")
		setIfMissing(meta, "namespace", namespace)
		setIfMissing(meta, "name", name)
		set(object(doc, "spec"), "nodeName", node, node)
		dropIfEmpty(doc, "spec")
		status := object(doc, "status")
		set(status, "podIP", ip, ip)
		set(status, "podIPs", ip, []map[string]string{{"ip": ip}})
		dropIfEmpty(doc, "status")
	})
}

// ServiceView returns the Service document `netloom get services` shows:
// raw (the stored Service) with what the agent decided for it in pl:
// spec.clusterIP and spec.clusterIPs (the allocated ClusterIP),
// status.loadBalancer.ingress (the VIP) and the annotations
// AnnouncedByAnnotation, PendingAnnotation and ConflictAnnotation.
func ServiceView(raw json.RawMessage, pl ServicePlace) (json.RawMessage, error) {
	return editDoc(raw, "service view", func(doc map[string]any) {
		spec := object(doc, "spec")
		if spec["clusterIP"] != "None" {
			set(spec, "clusterIP", pl.ClusterIP, pl.ClusterIP)
			set(spec, "clusterIPs", pl.ClusterIP, []string{pl.ClusterIP})
		}
		if ports, ok := spec["ports"].([]any); ok {
			for i, p := range ports {
				if pm, ok := p.(map[string]any); ok && i < len(pl.NodePorts) && pl.NodePorts[i] != 0 {
					pm["nodePort"] = pl.NodePorts[i]
				}
			}
		}
		if pl.HealthCheckNodePort != 0 {
			spec["healthCheckNodePort"] = pl.HealthCheckNodePort
		}
		lbStatus := map[string]any{}
		set(lbStatus, "ingress", pl.ExternalIP, []map[string]string{{"ip": pl.ExternalIP}})
		doc["status"] = map[string]any{"loadBalancer": lbStatus}
		meta := object(doc, "metadata")
		ann := object(meta, "annotations")
		set(ann, AnnouncedByAnnotation, pl.Owner, pl.Owner)
		set(ann, PendingAnnotation, pl.Pending, pl.Pending)
		set(ann, ConflictAnnotation, pl.Conflict, pl.Conflict)
		dropIfEmpty(meta, "annotations")
	})
}

// PolicyView returns the NetworkPolicy document `netloom get
// networkpolicies` shows: raw (the stored NetworkPolicy) with a status
// holding selectedPods, the pods ("namespace/name") the policy selects
// (nil is shown as an empty list), and counters, the packet counters of
// the node that answers (marshalled as they are, e.g. an
// *api.PolicyCounters; nil leaves them out).
func PolicyView(raw json.RawMessage, selectedPods []string, counters any) (json.RawMessage, error) {
	if selectedPods == nil {
		selectedPods = []string{}
	}
	return editDoc(raw, "policy view", func(doc map[string]any) {
		status := map[string]any{"selectedPods": selectedPods}
		if counters != nil {
			status["counters"] = counters
		}
		doc["status"] = status
	})
}

// policyStatus is the status PolicyView adds, as Table reads it.
type policyStatus struct {
	SelectedPods []string `json:"selectedPods"`
}

// editDoc decodes raw, a JSON object, lets edit change it and encodes it
// again. Numbers keep their text; keys come out sorted.
func editDoc(raw json.RawMessage, op string, edit func(doc map[string]any)) (json.RawMessage, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var doc map[string]any
	if err := d.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if doc == nil {
		return nil, fmt.Errorf("%s: no document", op)
	}
	edit(doc)
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return b, nil
}

// object returns m[key] as a JSON object, putting an empty one there when
// it is missing (or not an object).
func object(m map[string]any, key string) map[string]any {
	o, ok := m[key].(map[string]any)
	if !ok {
		o = map[string]any{}
		m[key] = o
	}
	return o
}

// set sets m[key] to v when the fact it comes from is known (not ""), and
// removes the key when it is not.
func set(m map[string]any, key, fact string, v any) {
	if fact == "" {
		delete(m, key)
		return
	}
	m[key] = v
}

// setIfMissing sets m[key] to v unless it has a value.
func setIfMissing(m map[string]any, key, v string) {
	if _, ok := m[key]; !ok && v != "" {
		m[key] = v
	}
}

// dropIfEmpty removes m[key] when it is an empty object.
func dropIfEmpty(m map[string]any, key string) {
	if o, ok := m[key].(map[string]any); ok && len(o) == 0 {
		delete(m, key)
	}
}
