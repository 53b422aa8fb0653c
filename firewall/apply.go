package firewall

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Applier installs Models in the kernel. It is safe for concurrent use;
// Apply calls are serialized.
type Applier struct {
	mu    sync.Mutex
	conn  *nftables.Conn
	owned bool // conn was made by us: drop it after an error, close it in Close
}

// Option configures an Applier.
type Option func(*Applier)

// WithConn makes the Applier use c instead of opening its own connection
// (tests pass one made with nftables.WithNetNSFd to work inside a network
// namespace). c must not be used for anything else while the Applier uses
// it: the Applier queues a whole transaction on it and flushes it.
func WithConn(c *nftables.Conn) Option {
	return func(a *Applier) { a.conn = c }
}

// NewApplier returns an Applier. Without WithConn it opens a netlink
// connection at first use, in the network namespace of the calling thread
// at that moment, and keeps it (Close releases it).
func NewApplier(opts ...Option) *Applier {
	a := &Applier{}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Apply makes the kernel's table exactly m, in one transaction: add the
// table (a no-op when it exists, so that the delete cannot fail), delete it,
// add it again with all its sets, chains and rules. nf_tables commits a
// batch atomically, so packets never see a missing or partial table, and
// nothing left from an earlier Apply (or added by hand) survives.
func (a *Applier) Apply(m Model) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("apply nftables table: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, err := a.connLocked()
	if err != nil {
		return fmt.Errorf("apply nftables table %s %s: %w", m.Family, m.Table, err)
	}
	if err := queueModel(c, m); err != nil {
		a.dropLocked()
		return fmt.Errorf("apply nftables table %s %s: %w", m.Family, m.Table, err)
	}
	if err := c.Flush(); err != nil {
		a.dropLocked()
		return fmt.Errorf("apply nftables table %s %s: %w", m.Family, m.Table, oneLine(err))
	}
	return nil
}

// Remove deletes netloom's table (inet netloom) if it exists.
func (a *Applier) Remove() error {
	return a.RemoveTable(TableFamily, TableName)
}

// RemoveTable deletes the table family/name if it exists; a missing table is
// not an error (it is added first in the same transaction).
func (a *Applier) RemoveTable(family, name string) error {
	fam, err := tableFamily(family)
	if err != nil {
		return fmt.Errorf("remove nftables table: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, err := a.connLocked()
	if err != nil {
		return fmt.Errorf("remove nftables table %s %s: %w", family, name, err)
	}
	t := &nftables.Table{Name: name, Family: fam}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		a.dropLocked()
		return fmt.Errorf("remove nftables table %s %s: %w", family, name, oneLine(err))
	}
	return nil
}

// Close releases the connection the Applier opened (not one given with
// WithConn). The Applier may be used again; it then opens a new one.
func (a *Applier) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.owned || a.conn == nil {
		return nil
	}
	err := a.conn.CloseLasting()
	a.conn, a.owned = nil, false
	return err
}

func (a *Applier) connLocked() (*nftables.Conn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink connection: %w", err)
	}
	a.conn, a.owned = c, true
	return c, nil
}

// dropLocked forgets a connection of our own after an error: it may hold
// queued messages or unread answers. The next call opens a fresh one.
func (a *Applier) dropLocked() {
	if !a.owned || a.conn == nil {
		return
	}
	_ = a.conn.CloseLasting()
	a.conn, a.owned = nil, false
}

// queueModel queues the replacing transaction for m on c.
func queueModel(c *nftables.Conn, m Model) error {
	fam, _ := tableFamily(m.Family) // checked by Validate
	t := &nftables.Table{Name: m.Table, Family: fam}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	chains := make(map[string]*nftables.Chain, len(m.Chains))
	for _, ch := range sortedChains(m.Chains) {
		kc := &nftables.Chain{Name: ch.Name, Table: t}
		if ch.BaseChain() {
			hook, _ := chainHook(ch.Hook)
			policy := nftables.ChainPolicyAccept
			if ch.Policy == "drop" {
				policy = nftables.ChainPolicyDrop
			}
			kc.Type = nftables.ChainType(ch.Type)
			kc.Hooknum = hook
			kc.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(ch.Priority))
			kc.Policy = &policy
		}
		chains[ch.Name] = c.AddChain(kc)
	}

	setIDs := make(map[string]uint32, len(m.Sets))
	for _, s := range sortedSets(m.Sets) {
		spec := s.Spec
		spec.Table, spec.Name, spec.ID = t, s.Name, 0
		var elems []nftables.SetElement
		for _, e := range s.Elements {
			elems = append(elems, e.Kernel...)
		}
		if err := c.AddSet(&spec, elems); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		setIDs[s.Name] = spec.ID
	}

	for _, ch := range sortedChains(m.Chains) {
		for _, r := range ch.Rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: chains[ch.Name], Exprs: withSetIDs(r.Exprs, setIDs)})
		}
	}
	return nil
}

// withSetIDs returns exprs with the set IDs of this transaction filled into
// lookups of named sets (copies; the model is not modified).
func withSetIDs(exprs []expr.Any, ids map[string]uint32) []expr.Any {
	out := make([]expr.Any, len(exprs))
	for i, e := range exprs {
		switch e := e.(type) {
		case *expr.Lookup:
			if id, ok := ids[e.SetName]; ok {
				cp := *e
				cp.SetID = id
				out[i] = &cp
				continue
			}
		case *expr.Dynset:
			if id, ok := ids[e.SetName]; ok {
				cp := *e
				cp.SetID = id
				out[i] = &cp
				continue
			}
		}
		out[i] = e
	}
	return out
}

// Validate checks what the kernel would refuse, so that Apply fails before
// queueing anything: families, hooks, types, policies, duplicate names,
// jumps to missing chains, lookups of missing sets.
func (m Model) Validate() error {
	var errs []error
	if _, err := tableFamily(m.Family); err != nil {
		errs = append(errs, err)
	}
	if m.Table == "" {
		errs = append(errs, errors.New("table name is empty"))
	}
	chains := map[string]bool{}
	for _, c := range m.Chains {
		if c.Name == "" {
			errs = append(errs, errors.New("chain with empty name"))
		}
		if chains[c.Name] {
			errs = append(errs, fmt.Errorf("chain %q defined twice", c.Name))
		}
		chains[c.Name] = true
		if !c.BaseChain() {
			if c.Type != "" || c.Policy != "" {
				errs = append(errs, fmt.Errorf("chain %q: type and policy need a hook", c.Name))
			}
			continue
		}
		if _, err := chainHook(c.Hook); err != nil {
			errs = append(errs, fmt.Errorf("chain %q: %w", c.Name, err))
		}
		switch c.Type {
		case "filter", "nat", "route":
		default:
			errs = append(errs, fmt.Errorf("chain %q: unknown type %q (want filter, nat or route)", c.Name, c.Type))
		}
		switch c.Policy {
		case "", "accept", "drop":
		default:
			errs = append(errs, fmt.Errorf("chain %q: unknown policy %q (want accept or drop)", c.Name, c.Policy))
		}
	}
	sets := map[string]bool{}
	for _, s := range m.Sets {
		if s.Name == "" {
			errs = append(errs, errors.New("set with empty name"))
		}
		if sets[s.Name] {
			errs = append(errs, fmt.Errorf("set %q defined twice", s.Name))
		}
		sets[s.Name] = true
		if s.Spec.Anonymous {
			errs = append(errs, fmt.Errorf("set %q: anonymous sets are not supported in a model", s.Name))
		}
		if s.Spec.KeyType.Bytes == 0 && s.Spec.KeyType.Name == "" {
			errs = append(errs, fmt.Errorf("set %q: key type missing", s.Name))
		}
	}
	for _, c := range m.Chains {
		for i, r := range c.Rules {
			for _, e := range r.Exprs {
				switch e := e.(type) {
				case *expr.Verdict:
					if (e.Kind == expr.VerdictJump || e.Kind == expr.VerdictGoto) && !chains[e.Chain] {
						errs = append(errs, fmt.Errorf("chain %q rule %d (%s): target chain %q missing", c.Name, i, r.Text, e.Chain))
					}
				case *expr.Lookup:
					if !sets[e.SetName] {
						errs = append(errs, fmt.Errorf("chain %q rule %d (%s): set %q missing", c.Name, i, r.Text, e.SetName))
					}
				case *expr.Dynset:
					if !sets[e.SetName] {
						errs = append(errs, fmt.Errorf("chain %q rule %d (%s): set %q missing", c.Name, i, r.Text, e.SetName))
					}
				}
			}
		}
	}
	return joinOneLine(errs)
}

// oneLine keeps err (for errors.Is/As) but prints it on one line without
// repeats: the netlink layer joins one error per message of the batch.
func oneLine(err error) error {
	if err == nil || !strings.Contains(err.Error(), "\n") {
		return err
	}
	return oneLineError{err}
}

type oneLineError struct{ err error }

func (e oneLineError) Unwrap() error { return e.err }

func (e oneLineError) Error() string {
	var parts []string
	for _, l := range strings.Split(e.err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(parts, l) {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// joinOneLine joins errors into one line ("a; b"), nil for none.
func joinOneLine(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

func tableFamily(name string) (nftables.TableFamily, error) {
	switch name {
	case "inet":
		return nftables.TableFamilyINet, nil
	case "ip":
		return nftables.TableFamilyIPv4, nil
	case "ip6":
		return nftables.TableFamilyIPv6, nil
	}
	return 0, fmt.Errorf("unsupported table family %q (want inet, ip or ip6)", name)
}

func chainHook(name string) (*nftables.ChainHook, error) {
	switch name {
	case "prerouting":
		return nftables.ChainHookPrerouting, nil
	case "input":
		return nftables.ChainHookInput, nil
	case "forward":
		return nftables.ChainHookForward, nil
	case "output":
		return nftables.ChainHookOutput, nil
	case "postrouting":
		return nftables.ChainHookPostrouting, nil
	}
	return nil, fmt.Errorf("unknown hook %q", name)
}
