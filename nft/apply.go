package nft

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Applier installs Models in the kernel. It is safe for concurrent use;
// Apply calls are serialized.
//
// The Applier remembers the last model it installed, and the kernel handles
// of its rules. The next Apply sends only the difference (new and deleted
// chains, sets and counters, rules deleted, replaced and inserted in chains
// whose rules changed (see ruleedit.go), set and map elements added and
// deleted), still as one transaction; when the difference cannot be expressed that way
// (a base chain's hook or priority, a set's type) or the kernel refuses it,
// Apply replaces the whole table instead. Call Invalidate to force the next
// Apply to replace the table (a periodic resync that also removes anything
// added by hand).
type Applier struct {
	mu    sync.Mutex
	conn  *nftables.Conn
	owned bool // conn was made by us: drop it after an error, close it in Close
	netns int  // namespace fd for our own connection; 0 = the calling thread's

	nl  *netlink.Conn // the socket of our own connection (nil with WithConn)
	seq uint32        // sequence numbers of batches sent on nl

	last *Model // what the kernel holds after our last Apply; nil = unknown
	// checked is the model the last Drift found whole in the kernel, at
	// ruleset generation checkedGen (nil: none); driftListed counts the
	// Drifts that listed the table (tests).
	checked     *Model
	checkedGen  uint32
	driftListed int
	// handles[chain][i] is the kernel handle of rule i of last's chain
	// (0 or a missing chain: unknown), for rule-level edits.
	handles map[string][]uint64
	stats   ApplyStats

	// Unexported options (benchmarks compare with the former behaviour).
	refillOnly   bool // flush and refill changed chains, never edit rules
	libraryFlush bool // send with nftables.Conn.Flush even on our own socket
}

// withRefillOnly makes the Applier flush and refill every chain whose rules
// changed (the behaviour before rule-level edits).
func withRefillOnly() Option { return func(a *Applier) { a.refillOnly = true } }

// withLibraryFlush makes the Applier send every batch with
// nftables.Conn.Flush (acks for every message, echoes not read).
func withLibraryFlush() Option { return func(a *Applier) { a.libraryFlush = true } }

// ApplyStats describes the last Apply.
type ApplyStats struct {
	// Incremental is true when only the difference to the previous model
	// was sent (Messages may then be 0: nothing changed).
	Incremental bool
	// Messages is the number of netlink messages of the transaction.
	Messages int
	// Change summarizes an incremental update ("chains +1 -0 ~2, ...").
	Change string
	// FullReason says why the table was replaced: "first apply", "set x
	// changed its type", or the error of a refused incremental batch.
	FullReason string
}

// Option configures an Applier.
type Option func(*Applier)

// WithConn makes the Applier use c instead of opening its own connection.
// c must not be used for anything else while the Applier uses it: the
// Applier queues a whole transaction on it and flushes it. Large models
// need large socket buffers (a transaction is one sendmsg, and the kernel
// acknowledges every message of it before we read): give c
// nftables.WithSockOptions(LargeBuffers) or prefer WithNetNS.
func WithConn(c *nftables.Conn) Option {
	return func(a *Applier) { a.conn = c }
}

// WithNetNS makes the Applier open its own connection in the network
// namespace fd refers to (tests pass a namespace they created). fd must stay
// open while the Applier is used.
func WithNetNS(fd int) Option {
	return func(a *Applier) { a.netns = fd }
}

// NewApplier returns an Applier. Without WithConn it opens a netlink
// connection at first use, in the network namespace given with WithNetNS or
// else of the calling thread at that moment, and keeps it (Close releases
// it).
func NewApplier(opts ...Option) *Applier {
	a := &Applier{}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Apply makes the kernel's table exactly m, in one transaction. When the
// previous Apply succeeded, only the difference is sent (see Applier);
// otherwise, and as the fallback, the table is replaced: add the table (a
// no-op when it exists, so that the delete cannot fail), delete it, add it
// again with all its content. nf_tables commits a batch atomically, so
// packets see the old table or the new one, never a half.
//
// m is kept (not copied) to compute the next difference: do not modify it
// after Apply.
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

	reason := "first apply"
	if a.last != nil {
		u, why := planUpdate(*a.last, m)
		switch {
		case why != "":
			reason = why
		case u.empty():
			if a.checked == a.last {
				a.checked = &m // the same model: Drift's last finding stands
			}
			a.last = &m
			a.stats = ApplyStats{Incremental: true}
			return nil
		default:
			fam, _ := tableFamily(m.Family)
			t := &nftables.Table{Name: m.Table, Family: fam}
			rules := a.planEditsLocked(c, t, &u)
			var rl ruleLog
			n, handles, err := a.sendLocked(c, func(c *nftables.Conn) (int, error) {
				return queueUpdate(c, t, u, &rl)
			})
			if err == nil {
				a.handles = updatedHandles(a.handles, m, u, rl.slots, handles)
				a.last = &m
				a.stats = ApplyStats{Incremental: true, Messages: n, Change: u.summary() + rules}
				return nil
			}
			// Refused as a whole (the batch is atomic): replace instead.
			reason = "incremental update refused: " + oneLine(err).Error()
			a.dropLocked()
			if c, err = a.connLocked(); err != nil {
				a.last, a.handles = nil, nil
				return fmt.Errorf("apply nftables table %s %s: %w", m.Family, m.Table, err)
			}
		}
	}

	a.last, a.handles = nil, nil // unknown until the replacement succeeds
	var rl ruleLog
	n, handles, err := a.sendLocked(c, func(c *nftables.Conn) (int, error) {
		return queueModel(c, m, &rl)
	})
	if err != nil {
		a.dropLocked()
		return fmt.Errorf("apply nftables table %s %s: %w", m.Family, m.Table, oneLine(err))
	}
	a.handles = updatedHandles(nil, m, tableUpdate{newChains: m.Chains}, rl.slots, handles)
	a.last = &m
	a.stats = ApplyStats{Messages: n, FullReason: reason}
	return nil
}

// sendLocked queues a transaction with queue and sends it as one batch:
// on our own socket when we have one (see batch.go), else with c.Flush. It
// returns the number of messages and the handles of the new rules in
// queueing order (nil when unknown).
func (a *Applier) sendLocked(c *nftables.Conn, queue func(*nftables.Conn) (int, error)) (int, []uint64, error) {
	if a.nl == nil || a.libraryFlush {
		n, err := queue(c)
		if err != nil {
			return n, nil, err
		}
		return n, nil, c.Flush()
	}
	msgs, n, err := captureBatch(queue)
	if err != nil {
		return n, nil, err
	}
	handles, err := sendBatch(a.nl, msgs, &a.seq)
	return n, handles, err
}

// planEditsLocked decides, for every chain of u whose rules changed,
// whether to edit its rules (see ruleedit.go) or to refill it, reading the
// handles it needs from the kernel when it does not know them. It returns a
// summary for ApplyStats.Change.
func (a *Applier) planEditsLocked(c *nftables.Conn, t *nftables.Table, u *tableUpdate) string {
	var add, del, repl, refilled int
	for i := range u.editChains {
		e := &u.editChains[i]
		if a.refillOnly {
			refilled++
			continue
		}
		match, ok := diffRules(e.old, e.chain.Rules, maxEditDistance)
		if ok {
			hs := a.handles[e.chain.Name]
			plan, need := planRules(e.old, e.chain.Rules, match, hs)
			if plan != nil && need {
				hs = kernelRuleHandles(c, t, e.chain.Name, len(e.old))
				plan, need = planRules(e.old, e.chain.Rules, match, hs)
				if plan != nil && !need {
					if a.handles == nil {
						a.handles = map[string][]uint64{}
					}
					a.handles[e.chain.Name] = hs
				}
			}
			if plan != nil && !need {
				e.plan = plan
				ad, de, re := plan.counts()
				add, del, repl = add+ad, del+de, repl+re
				continue
			}
		}
		refilled++
	}
	if len(u.editChains) == 0 {
		return ""
	}
	return fmt.Sprintf(", rules +%d -%d ~%d, chains refilled %d", add, del, repl, refilled)
}

// updatedHandles returns the rule handles of the model m after u was
// applied: those of chains u left alone from old, those of edited chains'
// kept rules, and the new rules' from the kernel's echo (handles[k] for
// slots[k]; unknown when handles is nil).
func updatedHandles(old map[string][]uint64, m Model, u tableUpdate, slots []ruleSlot, handles []uint64) map[string][]uint64 {
	out := make(map[string][]uint64, len(m.Chains))
	for _, ch := range m.Chains {
		if hs, ok := old[ch.Name]; ok && len(hs) == len(ch.Rules) {
			out[ch.Name] = hs
		}
	}
	for _, ch := range u.newChains {
		out[ch.Name] = make([]uint64, len(ch.Rules))
	}
	for _, e := range u.editChains {
		hs := make([]uint64, len(e.chain.Rules))
		if e.plan != nil {
			oh := old[e.chain.Name]
			for j, i := range e.plan.kept {
				if i >= 0 && i < len(oh) && len(oh) == len(e.old) {
					hs[j] = oh[i]
				}
			}
		}
		out[e.chain.Name] = hs
	}
	if len(handles) == len(slots) {
		for k, s := range slots {
			if hs := out[s.chain]; s.index < len(hs) {
				hs[s.index] = handles[k]
			}
		}
	}
	return out
}

// LastApply describes the last successful Apply.
func (a *Applier) LastApply() ApplyStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

// Invalidate forgets the last applied model: the next Apply replaces the
// whole table (and resets its counters).
func (a *Applier) Invalidate() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last, a.handles = nil, nil
}

// CounterValue is what a named counter has counted.
type CounterValue struct {
	Packets uint64
	Bytes   uint64
}

// Counters reads the named counters of the table family/name: counter
// name -> value. A missing table gives an error.
func (a *Applier) Counters(family, name string) (map[string]CounterValue, error) {
	fam, err := tableFamily(family)
	if err != nil {
		return nil, fmt.Errorf("read nftables counters: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, err := a.connLocked()
	if err != nil {
		return nil, fmt.Errorf("read nftables counters of %s %s: %w", family, name, err)
	}
	objs, err := c.GetNamedObjects(&nftables.Table{Name: name, Family: fam})
	if err != nil {
		a.dropLocked()
		return nil, fmt.Errorf("read nftables counters of %s %s: %w", family, name, oneLine(err))
	}
	out := make(map[string]CounterValue, len(objs))
	for _, o := range objs {
		no, ok := o.(*nftables.NamedObj)
		if !ok || no.Type != nftables.ObjTypeCounter {
			continue
		}
		if ctr, ok := no.Obj.(*expr.Counter); ok {
			out[no.Name] = CounterValue{Packets: ctr.Packets, Bytes: ctr.Bytes}
		}
	}
	return out, nil
}

// Remove deletes the table family/name if it exists; a missing table is
// not an error (it is added first in the same transaction). The next Apply
// replaces the table.
func (a *Applier) Remove(family, name string) error {
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
	a.last, a.handles = nil, nil
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
	a.conn, a.owned, a.nl = nil, false, nil
	return err
}

func (a *Applier) connLocked() (*nftables.Conn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	var nl *netlink.Conn
	keep := func(c *netlink.Conn) error {
		if nl == nil {
			nl = c
		}
		return nil
	}
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(LargeBuffers, keep)}
	if a.netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(a.netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink connection: %w", err)
	}
	a.conn, a.owned, a.nl = c, true, nl
	return c, nil
}

// dropLocked forgets a connection of our own after an error: it may hold
// queued messages or unread answers. The next call opens a fresh one.
func (a *Applier) dropLocked() {
	if !a.owned || a.conn == nil {
		return
	}
	_ = a.conn.CloseLasting()
	a.conn, a.owned, a.nl = nil, false, nil
}

// batchBuffer is the socket buffer size for transactions: a batch is sent
// in one sendmsg (the kernel refuses one larger than the send buffer), and
// every message of it is acknowledged before we read (acks that do not fit
// in the receive buffer are lost and the read fails with ENOBUFS, although
// the batch committed). Both are limits, not allocations. A table of ten
// thousand NetworkPolicies is some 10^5 messages.
const batchBuffer = 1 << 28

// LargeBuffers is a socket option for nftables connections that raises the
// send and receive buffers to batchBuffer (SO_SNDBUFFORCE/SO_RCVBUFFORCE
// need CAP_NET_ADMIN; without it the ordinary, capped options are used).
func LargeBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("netlink socket buffers: %w", err)
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], batchBuffer); e != nil {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], batchBuffer); e != nil {
					serr = e
				}
			}
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("netlink socket buffers: %w", err)
	}
	return nil
}

// queueModel queues the replacing transaction for m on c and returns the
// number of messages.
// rl records the rule each NEWRULE message creates.
func queueModel(c *nftables.Conn, m Model, rl *ruleLog) (int, error) {
	fam, _ := tableFamily(m.Family) // checked by Validate
	t := &nftables.Table{Name: m.Table, Family: fam}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	n := 3

	for _, name := range sortedStrings(m.Counters) {
		c.AddObj(&nftables.CounterObj{Table: t, Name: name})
		n++
	}
	chains := make(map[string]*nftables.Chain, len(m.Chains))
	for _, ch := range sortedChains(m.Chains) {
		chains[ch.Name] = c.AddChain(kernelChain(t, ch))
		n++
	}
	setIDs := make(map[string]uint32, len(m.Sets))
	for _, s := range sortedSets(m.Sets) {
		id, k, err := addSet(c, t, s)
		if err != nil {
			return n, err
		}
		setIDs[s.Name] = id
		n += k
	}
	for _, ch := range sortedChains(m.Chains) {
		for i, r := range ch.Rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: chains[ch.Name], Exprs: withSetIDs(r.Exprs, setIDs)})
			rl.add(ch.Name, i)
			n++
		}
	}
	return n, nil
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
	counters := map[string]bool{}
	for _, n := range m.Counters {
		if n == "" {
			errs = append(errs, errors.New("counter with empty name"))
		}
		if counters[n] {
			errs = append(errs, fmt.Errorf("counter %q defined twice", n))
		}
		counters[n] = true
	}
	for _, c := range m.Chains {
		for i, r := range c.Rules {
			for _, e := range r.Exprs {
				switch e := e.(type) {
				case *expr.Objref:
					if e.Type == int(nftables.ObjTypeCounter) && !counters[e.Name] {
						errs = append(errs, fmt.Errorf("chain %q rule %d (%s): counter %q missing", c.Name, i, r.Text, e.Name))
					}
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
