package nft

import "slices"

// Merge joins model fragments into one table: the family and table name of
// the first part (of a later one where they are empty), and the sets,
// chains and counters of every part in order. Names must not collide
// across parts (Validate reports it when they do); netloom's agent merges
// the masquerade ruleset, the service proxy's fragment and the
// NetworkPolicy fragment this way.
func Merge(parts ...Model) Model {
	var out Model
	for i, p := range parts {
		if i == 0 {
			out.Family, out.Table = p.Family, p.Table
		}
		if out.Family == "" {
			out.Family = p.Family
		}
		if out.Table == "" {
			out.Table = p.Table
		}
		out.Sets = append(out.Sets, p.Sets...)
		out.Chains = append(out.Chains, p.Chains...)
		out.Counters = append(out.Counters, p.Counters...)
	}
	out.Sets = slices.Clip(out.Sets)
	out.Chains = slices.Clip(out.Chains)
	out.Counters = slices.Clip(out.Counters)
	return out
}
