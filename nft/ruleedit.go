package nft

import (
	"github.com/google/nftables"
)

// Rule-level chain edits. A chain whose rules changed is not flushed and
// refilled: the old and the new rule lists are diffed (by Text, as
// sameRules compares them) and only the difference is sent, in the same
// batch as the rest of the update: removed rules deleted by their kernel
// handle, a removed rule followed by a new one replaced in place, new rules
// inserted before the next kept rule (or appended at the end). The kernel
// applies the batch atomically, so the chain is never seen half edited. A
// class chain of ten thousand NetworkPolicy rules with one rule changed is
// then one message instead of ten thousand.
//
// That needs the kernel handle of every old rule the edit touches: the
// Applier keeps them per chain next to the last model (see
// Applier.handles). Handles the Applier does not know (the kernel's echo
// was not read, as with WithConn) are read with one GetRules of that chain
// before the batch; when even that fails or disagrees with the model (a
// different number of rules), the chain is flushed and refilled as before.
// A stale handle (a rule deleted by hand) makes the kernel refuse the batch,
// and Apply replaces the whole table.

// ruleOpKind is one operation of a rule edit.
type ruleOpKind uint8

const (
	opDelete  ruleOpKind = iota // delete the old rule with handle
	opReplace                   // replace the old rule with handle by new rule index
	opInsert                    // insert new rule index before the rule with handle
	opAppend                    // append new rule index at the end of the chain
)

type ruleOp struct {
	kind   ruleOpKind
	handle uint64
	index  int // new rule (not for opDelete)
}

// rulePlan turns a chain's old rules into its new ones.
type rulePlan struct {
	ops []ruleOp
	// kept[j] is the old index of new rule j when the rule is kept, else -1.
	kept []int
}

// counts returns the numbers of rules added, deleted and replaced.
func (p *rulePlan) counts() (add, del, repl int) {
	for _, op := range p.ops {
		switch op.kind {
		case opDelete:
			del++
		case opReplace:
			repl++
		default:
			add++
		}
	}
	return add, del, repl
}

// maxEditDistance bounds the diff of one chain's rules (insertions plus
// deletions in its changed middle): a larger change refills the chain,
// which is then hardly more messages anyway. It bounds the diff's memory
// (some (2d)^2/2 int32s).
const maxEditDistance = 1024

// diffRules matches old to new rules by Text: match[i] is the new index of
// old rule i when it is kept, -1 when it is deleted. The matching is a
// longest common subsequence (so the kept rules keep their order) of the
// part between the common prefix and suffix; ok is false when the middle
// needs more than maxD insertions and deletions.
func diffRules(old, new []Rule, maxD int) (match []int, ok bool) {
	match = make([]int, len(old))
	for i := range match {
		match[i] = -1
	}
	p := 0
	for p < len(old) && p < len(new) && old[p].Text == new[p].Text {
		match[p] = p
		p++
	}
	eo, en := len(old), len(new)
	for eo > p && en > p && old[eo-1].Text == new[en-1].Text {
		eo--
		en--
		match[eo] = en
	}
	a, b := old[p:eo], new[p:en]
	if len(a) == 0 || len(b) == 0 {
		return match, true
	}
	pairs, ok := myers(a, b, maxD)
	if !ok {
		return nil, false
	}
	for _, pr := range pairs {
		match[p+pr[0]] = p + pr[1]
	}
	return match, true
}

// myers returns the matched index pairs of a shortest edit script from a to
// b (E. Myers, "An O(ND) difference algorithm and its variations", 1986),
// or false when it needs more than maxD edits.
func myers(a, b []Rule, maxD int) ([][2]int, bool) {
	n, m := len(a), len(b)
	if d := n + m; d < maxD {
		maxD = d
	}
	off := maxD + 1
	v := make([]int32, 2*maxD+3)
	// trace[d] holds v[k] for k in [-d, d] after step d.
	var trace [][]int32
	for d := 0; d <= maxD; d++ {
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = int(v[off+k+1]) // down: insertion of b[y-1]
			} else {
				x = int(v[off+k-1]) + 1 // right: deletion of a[x-1]
			}
			y := x - k
			for x < n && y < m && a[x].Text == b[y].Text {
				x++
				y++
			}
			v[off+k] = int32(x)
			if x >= n && y >= m {
				snap := make([]int32, 2*d+1)
				copy(snap, v[off-d:off+d+1])
				trace = append(trace, snap)
				return myersPairs(a, b, trace), true
			}
		}
		snap := make([]int32, 2*d+1)
		copy(snap, v[off-d:off+d+1])
		trace = append(trace, snap)
	}
	return nil, false
}

// myersPairs walks the trace of myers back from the end.
func myersPairs(a, b []Rule, trace [][]int32) [][2]int {
	var pairs [][2]int
	x, y := len(a), len(b)
	for d := len(trace) - 1; d > 0; d-- {
		prev := trace[d-1] // k in [-(d-1), d-1] at index k+d-1
		at := func(k int) int { return int(prev[k+d-1]) }
		k := x - y
		var pk int
		if k == -d || (k != d && at(k-1) < at(k+1)) {
			pk = k + 1
		} else {
			pk = k - 1
		}
		px := at(pk)
		py := px - pk
		// The edit leads from (px, py) to the start of the snake.
		sx, sy := px, py+1
		if pk == k-1 {
			sx, sy = px+1, py
		}
		for x > sx && y > sy {
			x--
			y--
			pairs = append(pairs, [2]int{x, y})
		}
		x, y = px, py
	}
	for x > 0 && y > 0 {
		x--
		y--
		pairs = append(pairs, [2]int{x, y})
	}
	// Reverse into increasing order.
	for i, j := 0, len(pairs)-1; i < j; i, j = i+1, j-1 {
		pairs[i], pairs[j] = pairs[j], pairs[i]
	}
	return pairs
}

// planRules returns the edit turning the kernel's old rules (with handles,
// 0 = unknown) into new. It returns nil when flushing and refilling the
// chain takes no more messages, and needHandles when the edit touches an old
// rule whose handle is not known.
func planRules(old, new []Rule, match []int, handles []uint64) (plan *rulePlan, needHandles bool) {
	handle := func(i int) uint64 {
		if i < len(handles) && len(handles) == len(old) {
			return handles[i]
		}
		return 0
	}
	p := &rulePlan{kept: make([]int, len(new))}
	for j := range p.kept {
		p.kept[j] = -1
	}
	for i, j := range match {
		if j >= 0 {
			p.kept[j] = i
		}
	}
	// Walk the gaps between kept rules: old rules [i0, i1) deleted, new
	// rules [j0, j1) added, i1 the next kept old rule (len(old) at the end).
	i0, j0 := 0, 0
	gap := func(i1, j1 int) {
		dels, adds := i1-i0, j1-j0
		for t := 0; t < dels || t < adds; t++ {
			switch {
			case t < dels && t < adds:
				h := handle(i0 + t)
				needHandles = needHandles || h == 0
				p.ops = append(p.ops, ruleOp{kind: opReplace, handle: h, index: j0 + t})
			case t < dels:
				h := handle(i0 + t)
				needHandles = needHandles || h == 0
				p.ops = append(p.ops, ruleOp{kind: opDelete, handle: h})
			case i1 < len(old):
				h := handle(i1)
				needHandles = needHandles || h == 0
				p.ops = append(p.ops, ruleOp{kind: opInsert, handle: h, index: j0 + t})
			default:
				p.ops = append(p.ops, ruleOp{kind: opAppend, index: j0 + t})
			}
		}
	}
	for i, j := range match {
		if j < 0 {
			continue
		}
		gap(i, j)
		i0, j0 = i+1, j+1
	}
	gap(len(old), len(new))
	if len(p.ops) >= 1+len(new) {
		return nil, false
	}
	return p, needHandles
}

// kernelRuleHandles reads the handles of chain's rules from the kernel, in
// order; nil when they cannot be read or their number is not want.
func kernelRuleHandles(c *nftables.Conn, t *nftables.Table, chain string, want int) []uint64 {
	rules, err := c.GetRules(t, &nftables.Chain{Name: chain, Table: t})
	if err != nil || len(rules) != want {
		return nil
	}
	hs := make([]uint64, len(rules))
	for i, r := range rules {
		if r.Handle == 0 {
			return nil
		}
		hs[i] = r.Handle
	}
	return hs
}
