package policy

import "github.com/netloom/netloom/nft"

// Counts are what a policy's counters say for one direction on one node.
type Counts struct {
	// Allowed: first packets of connections a rule of the policy allowed
	// (replies and later packets pass as established and are not counted).
	AllowedPackets, AllowedBytes uint64
	// Dropped: packets dropped at pods the policy isolates because no rule
	// of their policies allowed them. A packet dropped at a pod isolated by
	// several policies counts for each of them.
	DroppedPackets, DroppedBytes uint64
}

// DirCounters are a policy's counts in both directions.
type DirCounters struct {
	Ingress, Egress Counts
}

// CountersFor maps the values of c's named counters (Applier.Counters of
// the table c.Model was applied to) to policies, "namespace/name" ->
// counts. Counters of other names are ignored; policies that select no
// local pod are absent.
func CountersFor(c *Compiled, values map[string]nft.CounterValue) map[string]DirCounters {
	out := map[string]DirCounters{}
	add := func(policy string, dir Direction, v nft.CounterValue, dropped bool) {
		dc := out[policy]
		cs := &dc.Ingress
		if dir == Egress {
			cs = &dc.Egress
		}
		if dropped {
			cs.DroppedPackets += v.Packets
			cs.DroppedBytes += v.Bytes
		} else {
			cs.AllowedPackets += v.Packets
			cs.AllowedBytes += v.Bytes
		}
		out[policy] = dc
	}
	for name, ref := range c.Counters {
		v := values[name]
		if !ref.Dropped {
			add(ref.Policy, ref.Direction, v, false)
			continue
		}
		for _, p := range c.Classes[ref.Class].Policies {
			add(p, ref.Direction, v, true)
		}
	}
	return out
}
