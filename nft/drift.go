package nft

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Drift compares the kernel's table with the model of the last successful
// Apply: the table itself, its chains (by name, and each chain's rules by
// their kernel handles, so a rule deleted, added or replaced by hand
// shows), its sets and maps (by name, and their elements by key) and its
// named counters. It returns a short description of what differs, "" when
// the kernel holds what was applied or when nothing is known to be
// applied (then the next Apply replaces the table anyway).
//
// Listing a table of 10,000 services back costs seconds of CPU and
// hundreds of megabytes of garbage, so Drift first reads the namespace's
// ruleset generation, which every committed nftables transaction (anyone's)
// advances: when it is the generation read before the last listing that
// found the same model whole, nothing can have changed, and Drift lists
// nothing.
func (a *Applier) Drift() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		return "", nil
	}
	gen, genOK := a.genLocked()
	if genOK && a.checked == a.last && a.checkedGen == gen {
		return "", nil
	}
	a.checked = nil
	d, err := a.driftLocked()
	if err == nil && d == "" && genOK {
		a.checked, a.checkedGen = a.last, gen
	}
	return d, err
}

// genLocked reads the ruleset generation of our connection's namespace
// (NFT_MSG_GETGEN); false without a socket of our own or on an error.
func (a *Applier) genLocked() (uint32, bool) {
	if _, err := a.connLocked(); err != nil || a.nl == nil {
		return 0, false
	}
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	msgs, err := a.nl.Execute(req)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			continue
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), true
			}
		}
	}
	return 0, false
}

// driftLocked lists the table and compares it with a.last (Drift).
func (a *Applier) driftLocked() (string, error) {
	a.driftListed++
	m := a.last
	fam, err := tableFamily(m.Family)
	if err != nil {
		return "", fmt.Errorf("check nftables table: %w", err)
	}
	c, err := a.connLocked()
	if err != nil {
		return "", fmt.Errorf("check nftables table %s %s: %w", m.Family, m.Table, err)
	}
	fail := func(what string, err error) (string, error) {
		a.dropLocked()
		return "", fmt.Errorf("check nftables table %s %s: %s: %w", m.Family, m.Table, what, oneLine(err))
	}
	tables, err := c.ListTablesOfFamily(fam)
	if err != nil {
		return fail("list tables", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == m.Table }) {
		return "table missing", nil
	}
	t := &nftables.Table{Name: m.Table, Family: fam}
	var diffs []string

	chains, err := c.ListChainsOfTableFamily(fam)
	if err != nil {
		return fail("list chains", err)
	}
	have := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == m.Table {
			have[ch.Name] = ch
		}
	}
	for _, ch := range m.Chains {
		kc, ok := have[ch.Name]
		if !ok {
			diffs = append(diffs, "chain "+ch.Name+" missing")
			continue
		}
		delete(have, ch.Name)
		rules, err := c.GetRules(t, kc)
		if err != nil {
			return fail("list rules of chain "+ch.Name, err)
		}
		want := a.handles[ch.Name]
		got := make([]uint64, len(rules))
		for i, r := range rules {
			got[i] = r.Handle
		}
		if len(want) == len(ch.Rules) && !slices.Contains(want, 0) && !slices.Equal(got, want) {
			diffs = append(diffs, fmt.Sprintf("chain %s has other rules (%d, want %d)", ch.Name, len(got), len(want)))
		} else if len(got) != len(ch.Rules) {
			diffs = append(diffs, fmt.Sprintf("chain %s has %d rules, want %d", ch.Name, len(got), len(ch.Rules)))
		}
	}
	for name := range have {
		diffs = append(diffs, "extra chain "+name)
	}

	sets, err := c.GetSets(t)
	if err != nil {
		return fail("list sets", err)
	}
	haveSet := map[string]*nftables.Set{}
	for _, s := range sets {
		haveSet[s.Name] = s
	}
	for _, s := range m.Sets {
		ks, ok := haveSet[s.Name]
		if !ok {
			diffs = append(diffs, "set "+s.Name+" missing")
			continue
		}
		delete(haveSet, s.Name)
		elems, err := c.GetSetElements(ks)
		if err != nil {
			return fail("list elements of set "+s.Name, err)
		}
		if d := elementDiff(s, elems); d != "" {
			diffs = append(diffs, "set "+s.Name+" "+d)
		}
	}
	for name := range haveSet {
		diffs = append(diffs, "extra set "+name)
	}

	objs, err := c.GetNamedObjects(t)
	if err != nil {
		return fail("list counters", err)
	}
	counters := map[string]bool{}
	for _, o := range objs {
		if no, ok := o.(*nftables.NamedObj); ok && no.Type == nftables.ObjTypeCounter {
			counters[no.Name] = true
		}
	}
	for _, name := range m.Counters {
		if !counters[name] {
			diffs = append(diffs, "counter "+name+" missing")
		}
	}
	slices.Sort(diffs)
	const show = 3
	if len(diffs) > show {
		diffs = append(diffs[:show], fmt.Sprintf("%d more", len(diffs)-show))
	}
	return strings.Join(diffs, "; "), nil
}

// elementDiff compares the kernel's elements of a set with the model's, by
// identity (key, key end, interval end): "" when they agree. It runs on
// every repair pass over every element (233,000 with 10,000 services), so
// it builds one string per model element and nothing per kernel element.
func elementDiff(s Set, got []nftables.SetElement) string {
	want := map[string]int{}
	n := 0
	var buf []byte
	for e := range s.All() {
		buf = e.eachIdentity(buf, func(id []byte) {
			want[string(id)]++
			n++
		})
	}
	missing, extra := 0, 0
	for _, e := range got {
		buf = appendIdentity(buf[:0], e.Key, e.KeyEnd, e.IntervalEnd)
		if want[string(buf)] > 0 {
			want[string(buf)]--
			continue
		}
		extra++
	}
	for _, c := range want {
		missing += c
	}
	if missing == 0 && extra == 0 {
		return ""
	}
	return fmt.Sprintf("has %d elements, want %d (%d missing, %d not ours)", len(got), n, missing, extra)
}
