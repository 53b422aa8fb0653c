package policy

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/netloom/netloom/nft"
	"golang.org/x/sys/unix"
)

// The tracer runs the first packet of a connection through a compiled
// model the way nf_tables does: it executes the rules' expressions (the
// ones sent to the kernel, not their text) on a register file, looks keys
// up in the sets' kernel elements (interval sets by their start and end
// elements, concatenated interval sets field by field, verdict maps by
// their verdicts) and follows jumps and returns. Only the Compiled's name
// maps are used to say which policy and rule a chain and rule index stand
// for. So `netloom policy trace` says what the kernel would do with the
// table it was given.

// TraceResult is what a packet met on one node.
type TraceResult struct {
	// Allowed: no base chain on the forward hook dropped the packet.
	Allowed bool
	// Egress and Ingress are the class chains' verdicts for the source's
	// egress and the destination's ingress on this node (Isolated false
	// when the address had no entry in the map).
	Egress, Ingress DirTrace
	// Policy and Rule name the rule that decided: the one that allowed the
	// last isolated direction, or Policy "" and Rule -1.
	Policy string
	Rule   int
	// Steps is the walk, one line per rule that matched or jumped.
	Steps []string
}

// DirTrace is one direction's class chain on a node.
type DirTrace struct {
	Isolated bool
	Allowed  bool
	Chain    string   // the class chain, "" when not isolated
	Policies []string // the class's policies
	Policy   string   // the policy whose rule matched; "" when none
	Rule     int      // its index in spec.ingress / spec.egress; -1
}

// Trace runs pkt, as the first packet of a new connection arriving on the
// forward hook, through c.Model (all its forward base chains in priority
// order; a drop in any is final).
func Trace(c *Compiled, pkt Packet) TraceResult {
	res := TraceResult{Allowed: true, Rule: -1,
		Egress: DirTrace{Allowed: true, Rule: -1}, Ingress: DirTrace{Allowed: true, Rule: -1}}
	vm, err := newVM(c.Model, pkt)
	if err != nil {
		res.Allowed = false
		res.Steps = append(res.Steps, "cannot trace: "+err.Error())
		return res
	}
	var bases []nft.Chain
	for _, ch := range c.Model.Chains {
		if ch.Hook == "forward" {
			bases = append(bases, ch)
		}
	}
	sort.SliceStable(bases, func(i, j int) bool { return bases[i].Priority < bases[j].Priority })
	for _, ch := range bases {
		v, err := vm.run(ch.Name, 0)
		if err != nil {
			res.Allowed = false
			vm.step("cannot trace: %v", err)
			break
		}
		if v == verdictNone {
			v = verdictAccept
			if ch.Policy == "drop" {
				v = verdictDrop
			}
			vm.step("chain %s: policy %s", ch.Name, v)
		}
		if v == verdictDrop {
			res.Allowed = false
			break
		}
	}
	res.Steps = vm.steps

	// Name what the class chains decided.
	for _, hit := range vm.hits {
		cl, ok := c.Classes[hit.chain]
		if !ok {
			continue
		}
		dt := DirTrace{Isolated: true, Chain: hit.chain, Policies: cl.Policies, Rule: -1}
		if hit.rule < len(cl.Rules) {
			ref := cl.Rules[hit.rule]
			dt.Policy, dt.Rule = ref.Policy, ref.Rule
		}
		dt.Allowed = dt.Policy != ""
		if cl.Direction == Egress {
			res.Egress = dt
		} else {
			res.Ingress = dt
		}
	}
	switch {
	case res.Ingress.Isolated:
		res.Policy, res.Rule = res.Ingress.Policy, res.Ingress.Rule
	case res.Egress.Isolated:
		res.Policy, res.Rule = res.Egress.Policy, res.Egress.Rule
	}
	if res.Egress.Isolated && !res.Egress.Allowed {
		res.Policy, res.Rule = res.Egress.Policy, res.Egress.Rule
	}
	return res
}

// ClusterTrace is a connection's verdict across the nodes it crosses: the
// source pod's node (its egress) and the destination pod's node (its
// ingress), or one node when both are there.
type ClusterTrace struct {
	Allowed bool
	// Reason is one line, like Decision.Reason.
	Reason string
	Hops   []Hop
	// Egress and Ingress are the decisive class chain results of the
	// source's and destination's nodes.
	Egress, Ingress DirTrace
}

// Hop is the trace on one node.
type Hop struct {
	Node string
	TraceResult
}

// ClusterTracer compiles each node's model once and traces packets through
// the models of the nodes a connection crosses.
type ClusterTracer struct {
	snap     *Snapshot
	opts     Options
	byIP     map[netip.Addr]*Pod
	compiled map[string]*Compiled
}

// NewClusterTracer prepares tracing for s; s must not change while the
// tracer is used.
func NewClusterTracer(s *Snapshot, opts Options) *ClusterTracer {
	t := &ClusterTracer{snap: s, opts: opts, byIP: map[netip.Addr]*Pod{}, compiled: map[string]*Compiled{}}
	for i := range s.Pods {
		p := &s.Pods[i]
		if _, ok := t.byIP[p.IP]; !ok {
			t.byIP[p.IP] = p
		}
	}
	return t
}

// TraceCluster traces pkt through the compiled models of the nodes it
// crosses; see ClusterTracer.Trace.
func TraceCluster(s *Snapshot, pkt Packet, opts Options) ClusterTrace {
	return NewClusterTracer(s, opts).Trace(pkt)
}

// Compiled returns node's compiled model (compiled on first use).
func (t *ClusterTracer) Compiled(node string) *Compiled {
	c, ok := t.compiled[node]
	if !ok {
		c = Compile(t.snap, node, t.opts)
		t.compiled[node] = c
	}
	return c
}

// Trace traces pkt. Pods are found by address; an address that is not a
// pod is outside (its packets are forwarded to, or from, the pod's node).
// A pod's packets to its own address never leave it and pass. Packets from
// a node to its own pods pass the output hook, not forward; they are not
// modelled here: a node's address is outside like any other.
func (t *ClusterTracer) Trace(pkt Packet) ClusterTrace {
	src, dst := t.byIP[pkt.Src], t.byIP[pkt.Dst]
	ct := ClusterTrace{Allowed: true,
		Egress: DirTrace{Allowed: true, Rule: -1}, Ingress: DirTrace{Allowed: true, Rule: -1}}
	if src != nil && pkt.Src == pkt.Dst {
		ct.Reason = fmt.Sprintf("allowed: %s to its own address stays inside the pod", src.Key())
		return ct
	}
	var nodes []string
	if src != nil {
		nodes = append(nodes, src.Node)
	}
	if dst != nil && (src == nil || dst.Node != src.Node) {
		nodes = append(nodes, dst.Node)
	}
	for _, n := range nodes {
		r := Trace(t.Compiled(n), pkt)
		ct.Hops = append(ct.Hops, Hop{Node: n, TraceResult: r})
		if src != nil && n == src.Node {
			ct.Egress = r.Egress
		}
		if dst != nil && n == dst.Node {
			ct.Ingress = r.Ingress
		}
		if !r.Allowed {
			ct.Allowed = false
			break // the packet never reaches the next node
		}
	}
	ct.Reason = clusterReason(ct, src, dst, pkt)
	return ct
}

func clusterReason(ct ClusterTrace, src, dst *Pod, pkt Packet) string {
	name := func(p *Pod, a netip.Addr) string {
		if p != nil {
			return p.Key()
		}
		return a.String()
	}
	part := func(dir Direction, p *Pod, a netip.Addr, d DirTrace, other string) string {
		switch {
		case p == nil:
			return fmt.Sprintf("%s %s is not a pod", map[Direction]string{Egress: "source", Ingress: "destination"}[dir], a)
		case !d.Isolated:
			return fmt.Sprintf("%s of %s not isolated", dir, p.Key())
		case d.Allowed:
			return fmt.Sprintf("%s of %s by policy %s rule %d (chain %s)", dir, p.Key(), d.Policy, d.Rule, d.Chain)
		}
		return fmt.Sprintf("%s of %s isolated by %s; no rule allows %s on %s (chain %s)",
			dir, p.Key(), strings.Join(d.Policies, ", "), other, what(pkt), d.Chain)
	}
	in := part(Ingress, dst, pkt.Dst, ct.Ingress, name(src, pkt.Src))
	eg := part(Egress, src, pkt.Src, ct.Egress, name(dst, pkt.Dst))
	switch {
	case ct.Allowed:
		return "allowed: " + in + "; " + eg
	case ct.Egress.Isolated && !ct.Egress.Allowed:
		return "denied: " + eg
	case ct.Ingress.Isolated && !ct.Ingress.Allowed:
		return "denied: " + in
	}
	var steps []string
	for _, h := range ct.Hops {
		if !h.Allowed && len(h.Steps) > 0 {
			steps = append(steps, h.Node+": "+h.Steps[len(h.Steps)-1])
		}
	}
	return "denied: " + strings.Join(steps, "; ")
}

// The virtual machine.

type verdictKind int

const (
	verdictNone   verdictKind = iota // fell off the end of a chain
	verdictAccept                    // final for this base chain
	verdictDrop                      // final
	verdictReturn                    // back to the caller
)

func (v verdictKind) String() string {
	return [...]string{"continue", "accept", "drop", "return"}[v]
}

type hit struct {
	chain string
	rule  int
}

type vm struct {
	chains map[string]*nft.Chain
	sets   map[string]*nft.Set
	netHdr []byte // IPv4 header
	trHdr  []byte // transport header (ports)
	l4     byte
	steps  []string
	hits   []hit // class chain rules that ended a chain (verdict or drop)
}

func newVM(m nft.Model, pkt Packet) (*vm, error) {
	if !pkt.Src.Is4() || !pkt.Dst.Is4() {
		return nil, fmt.Errorf("only IPv4 packets are traced (%s -> %s)", pkt.Src, pkt.Dst)
	}
	v := &vm{chains: map[string]*nft.Chain{}, sets: map[string]*nft.Set{}}
	for i := range m.Chains {
		v.chains[m.Chains[i].Name] = &m.Chains[i]
	}
	for i := range m.Sets {
		v.sets[m.Sets[i].Name] = &m.Sets[i]
	}
	proto, ok := protoOfOK(pkt.Protocol)
	if !ok {
		return nil, fmt.Errorf("unknown protocol %q", pkt.Protocol)
	}
	v.l4 = proto
	s, d := pkt.Src.As4(), pkt.Dst.As4()
	v.netHdr = make([]byte, 20)
	v.netHdr[0] = 0x45
	v.netHdr[9] = proto
	copy(v.netHdr[12:], s[:])
	copy(v.netHdr[16:], d[:])
	v.trHdr = make([]byte, 20)
	v.trHdr[0], v.trHdr[1] = 0x9c, 0x40 // source port 40000
	v.trHdr[2], v.trHdr[3] = byte(pkt.Port>>8), byte(pkt.Port)
	return v, nil
}

func (v *vm) step(format string, args ...any) {
	v.steps = append(v.steps, fmt.Sprintf(format, args...))
}

const maxDepth = 16 // nf_tables allows 16 jump levels

// run evaluates chain name and returns its verdict (verdictNone when the
// packet fell off its end or met return, which means: continue in the
// caller).
func (v *vm) run(name string, depth int) (verdictKind, error) {
	if depth >= maxDepth {
		return verdictDrop, fmt.Errorf("jump depth over %d at chain %s", maxDepth, name)
	}
	ch, ok := v.chains[name]
	if !ok {
		return verdictDrop, fmt.Errorf("chain %s missing", name)
	}
	for i, r := range ch.Rules {
		res, err := v.rule(r)
		if err != nil {
			return verdictDrop, fmt.Errorf("chain %s rule %d (%s): %w", name, i, r.Text, err)
		}
		if !res.matched {
			continue
		}
		switch res.kind {
		case expr.VerdictJump, expr.VerdictGoto:
			v.step("chain %s rule %d: %s -> %s %s", name, i, r.Text, verbOf(res.kind), res.chain)
			sub, err := v.run(res.chain, depth+1)
			if err != nil {
				return verdictDrop, err
			}
			if sub == verdictAccept || sub == verdictDrop || res.kind == expr.VerdictGoto {
				return sub, nil
			}
			continue // return or end of the jumped-to chain
		case expr.VerdictAccept:
			v.step("chain %s rule %d: %s -> accept", name, i, r.Text)
			v.hits = append(v.hits, hit{name, i})
			return verdictAccept, nil
		case expr.VerdictDrop:
			v.step("chain %s rule %d: %s -> drop", name, i, r.Text)
			v.hits = append(v.hits, hit{name, i})
			return verdictDrop, nil
		case expr.VerdictReturn:
			v.step("chain %s rule %d: %s -> return", name, i, r.Text)
			v.hits = append(v.hits, hit{name, i})
			return verdictNone, nil
		case verdictContinue:
			// A rule without verdict (log, counter): go on.
		}
	}
	return verdictNone, nil
}

func verbOf(k expr.VerdictKind) string {
	if k == expr.VerdictGoto {
		return "goto"
	}
	return "jump"
}

// verdictContinue marks a matching rule that set no verdict.
const verdictContinue expr.VerdictKind = expr.VerdictContinue

type ruleResult struct {
	matched bool
	kind    expr.VerdictKind
	chain   string
}

// rule executes one rule's expressions.
func (v *vm) rule(r nft.Rule) (ruleResult, error) {
	var regs [16 + 4*16]byte // verdict register aside: data regs 1..4 = 32-bit regs 8..23
	res := ruleResult{matched: true, kind: verdictContinue}
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			var val []byte
			switch e.Key {
			case expr.MetaKeyNFPROTO:
				val = []byte{unix.NFPROTO_IPV4}
			case expr.MetaKeyL4PROTO:
				val = []byte{v.l4}
			case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
				val = make([]byte, unix.IFNAMSIZ) // interfaces are not modelled: no name matches
			default:
				return res, fmt.Errorf("meta key %d not modelled", e.Key)
			}
			if err := store(&regs, e.Register, val); err != nil {
				return res, err
			}
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				return res, fmt.Errorf("payload write not modelled")
			}
			var hdr []byte
			switch e.Base {
			case expr.PayloadBaseNetworkHeader:
				hdr = v.netHdr
			case expr.PayloadBaseTransportHeader:
				hdr = v.trHdr
			default:
				return res, fmt.Errorf("payload base %d not modelled", e.Base)
			}
			if int(e.Offset+e.Len) > len(hdr) {
				return res, fmt.Errorf("payload @%d+%d beyond the header", e.Offset, e.Len)
			}
			if err := store(&regs, e.DestRegister, hdr[e.Offset:e.Offset+e.Len]); err != nil {
				return res, err
			}
		case *expr.Ct:
			if e.Key != expr.CtKeySTATE {
				return res, fmt.Errorf("ct key %d not modelled", e.Key)
			}
			// The first packet of a connection: state new.
			if err := store(&regs, e.Register, binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW)); err != nil {
				return res, err
			}
		case *expr.Bitwise:
			src, err := load(&regs, e.SourceRegister, e.Len)
			if err != nil {
				return res, err
			}
			out := make([]byte, e.Len)
			for i := range out {
				out[i] = src[i]&e.Mask[i] ^ e.Xor[i]
			}
			if err := store(&regs, e.DestRegister, out); err != nil {
				return res, err
			}
		case *expr.Cmp:
			val, err := load(&regs, e.Register, uint32(len(e.Data)))
			if err != nil {
				return res, err
			}
			c := bytes.Compare(val, e.Data)
			ok := map[expr.CmpOp]bool{
				expr.CmpOpEq: c == 0, expr.CmpOpNeq: c != 0, expr.CmpOpLt: c < 0,
				expr.CmpOpLte: c <= 0, expr.CmpOpGt: c > 0, expr.CmpOpGte: c >= 0,
			}[e.Op]
			if !ok {
				res.matched = false
				return res, nil
			}
		case *expr.Lookup:
			set, ok := v.sets[e.SetName]
			if !ok {
				return res, fmt.Errorf("set %s missing", e.SetName)
			}
			key, err := load(&regs, e.SourceRegister, set.Spec.KeyType.Bytes)
			if err != nil {
				return res, err
			}
			el, found := setLookup(set, key)
			if e.Invert {
				found = !found
			}
			if !found {
				res.matched = false
				return res, nil
			}
			if e.IsDestRegSet {
				if e.DestRegister != 0 || el.VerdictData == nil {
					return res, fmt.Errorf("data maps not modelled (set %s)", e.SetName)
				}
				res.kind, res.chain = el.VerdictData.Kind, el.VerdictData.Chain
				return res, nil
			}
		case *expr.Verdict:
			res.kind, res.chain = e.Kind, e.Chain
			return res, nil
		case *expr.Objref, *expr.Counter, *expr.Log, *expr.Limit:
			// Counting, logging and rate limits (assumed under the limit)
			// do not change the verdict.
		default:
			return res, fmt.Errorf("expression %T not modelled", e)
		}
	}
	return res, nil
}

// Registers: 1..4 are 16-byte registers, 8..23 the 32-bit registers over
// the same storage. Values are written zero-padded to 4 bytes, as the
// kernel does.
func regOffset(r uint32) (int, error) {
	switch {
	case r >= 1 && r <= 4:
		return int(r-1) * 16, nil
	case r >= 8 && r <= 23:
		return int(r-8) * 4, nil
	}
	return 0, fmt.Errorf("register %d not modelled", r)
}

func store(regs *[80]byte, r uint32, val []byte) error {
	off, err := regOffset(r)
	if err != nil {
		return err
	}
	padded := (len(val) + 3) / 4 * 4
	if off+padded > len(regs) {
		return fmt.Errorf("value of %d bytes beyond register %d", len(val), r)
	}
	clear(regs[off : off+padded])
	copy(regs[off:], val)
	return nil
}

func load(regs *[80]byte, r uint32, n uint32) ([]byte, error) {
	off, err := regOffset(r)
	if err != nil {
		return nil, err
	}
	if off+int(n) > len(regs) {
		return nil, fmt.Errorf("%d bytes beyond register %d", n, r)
	}
	return slices.Clone(regs[off : off+int(n)]), nil
}

// setLookup finds key in set the way the kernel's set backends do: exact
// elements (hash), start/end element pairs (rbtree intervals: the greatest
// element not above key must be a start), and key..key-end per field
// (pipapo: concatenated intervals).
func setLookup(s *nft.Set, key []byte) (nftables.SetElement, bool) {
	var elems []nftables.SetElement
	for e := range s.All() {
		elems = e.AppendKernel(elems)
	}
	switch {
	case s.Spec.Interval && s.Spec.Concatenation:
		fields := fieldSizes(s.Spec.KeyType)
		for _, e := range elems {
			end := e.KeyEnd
			if end == nil {
				end = e.Key
			}
			if inFields(key, e.Key, end, fields) {
				return e, true
			}
		}
	case s.Spec.Interval:
		var best *nftables.SetElement
		for i := range elems {
			e := &elems[i]
			if bytes.Compare(e.Key, key) <= 0 && (best == nil || bytes.Compare(e.Key, best.Key) > 0 ||
				(bytes.Equal(e.Key, best.Key) && !e.IntervalEnd)) {
				best = e
			}
		}
		if best != nil && !best.IntervalEnd {
			return *best, true
		}
	default:
		for _, e := range elems {
			if bytes.Equal(e.Key, key) {
				return e, true
			}
		}
	}
	return nftables.SetElement{}, false
}

func fieldSizes(t nftables.SetDatatype) []int {
	var out []int
	for _, f := range nftables.ConcatSetTypeElements(t) {
		out = append(out, int((f.Bytes+3)/4*4))
	}
	return out
}

func inFields(key, lo, hi []byte, fields []int) bool {
	off := 0
	for _, n := range fields {
		if off+n > len(key) || off+n > len(lo) || off+n > len(hi) {
			return false
		}
		k := key[off : off+n]
		if bytes.Compare(k, lo[off:off+n]) < 0 || bytes.Compare(k, hi[off:off+n]) > 0 {
			return false
		}
		off += n
	}
	return true
}
