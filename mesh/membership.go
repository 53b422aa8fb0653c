package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Member states as shown by status.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)

// Meta is what a node gossips about itself in memberlist's node metadata
// (512 bytes at most): only what identifies it. Everything else lives in the
// store.
type Meta struct {
	Addr    string `json:"a"`
	WGKey   string `json:"k,omitempty"`
	WGPort  int    `json:"p,omitempty"`
	Subnet  string `json:"s,omitempty"`
	Version string `json:"v,omitempty"`
	// Leaving is set just before a graceful leave, so that the others tell
	// "left" from "dead" (memberlist reports both as a leave).
	Leaving bool `json:"l,omitempty"`
}

// Member is one node of the cluster as this node sees it.
type Member struct {
	Name  string
	Addr  netip.Addr
	Port  int
	State string
	Meta  Meta
	Self  bool
	Since time.Time
}

// Replicator carries the store's data over memberlist (see mesh/store).
type Replicator interface {
	NotifyMsg([]byte)
	GetBroadcasts(overhead, limit int) [][]byte
	LocalState(join bool) []byte
	MergeRemoteState(buf []byte, join bool)
}

// Greeter is an optional part of a Replicator: Greeting returns the
// messages to send, best effort, to a member this node has just learned of
// (see store.Replicator.Greeting).
type Greeter interface {
	Greeting() [][]byte
}

// Timers are memberlist's failure-detection and gossip timers.
type Timers struct {
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	SuspicionMult    int
	GossipInterval   time.Duration
	PushPullInterval time.Duration
}

// DefaultTimers are tuned for fast failure detection on a LAN. A member
// that stops answering is suspected when a probe of it gets no answer
// within one probe interval (direct, indirect through other members, or
// TCP), and declared failed after the suspicion timeout (suspicion-mult x
// max(1, log10(n)) x probe interval = 0.4 s up to 10 nodes) unless it
// refutes meanwhile; in a 3-node cluster a VIP then moves about 0.7 s
// after its owner's link goes down (BENCHMARKS.md, section 5). The probe
// interval, not the suspicion, is what was cut from the first tuning
// (200 ms, 150 ms, 2): the suspicion stays 0.4 s, so a member must stay
// silent for about 0.5 s to be declared failed (0.6 s before), and a
// suspicion-mult of 4 is memberlist's own, under which with 4 or more
// nodes the timeout starts longer and shortens as other members confirm
// the suspicion (Lifeguard). Cost: 10 probes a second per node, a few
// hundred bytes each. A 3-node cluster with every CPU kept busy showed no
// false failure (bench/failover -only soak). Hosts that stall for longer
// (VM pauses, swapping) should raise --suspicion-mult or --probe-interval.
func DefaultTimers() Timers {
	return Timers{
		ProbeInterval:    100 * time.Millisecond,
		ProbeTimeout:     50 * time.Millisecond,
		SuspicionMult:    4,
		GossipInterval:   100 * time.Millisecond,
		PushPullInterval: 15 * time.Second,
	}
}

// Config configures a Membership.
type Config struct {
	Name          string
	BindAddr      netip.Addr // defaults to AdvertiseAddr
	AdvertiseAddr netip.Addr
	Port          int
	Key           []byte // 16, 24 or 32 bytes: gossip is encrypted and authenticated with it
	Timers        Timers
	Log           *slog.Logger
	// OnEvent, when set, is called for membership events ("join", "leave",
	// "dead", "update") with the member's name.
	OnEvent func(kind, node string)
}

// Membership is this node's view of the cluster, kept by memberlist.
type Membership struct {
	cfg  Config
	log  *slog.Logger
	ml   *memberlist.Memberlist
	repl Replicator

	mu    sync.Mutex
	meta  []byte
	known map[string]Member // every node ever seen, with dead/left kept
	// rawMeta is the metadata known[name].Meta was decoded from: Members
	// decodes a member's metadata again only when memberlist holds other
	// bytes (Members runs on every snapshot; at 200 members decoding every
	// member's JSON each time was a tenth of the agent's CPU).
	rawMeta map[string]string
	kick    chan struct{}
	started bool
}

// New returns a Membership; Start creates the memberlist.
func New(cfg Config) *Membership {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if !cfg.BindAddr.IsValid() {
		cfg.BindAddr = cfg.AdvertiseAddr
	}
	if cfg.Timers == (Timers{}) {
		cfg.Timers = DefaultTimers()
	}
	return &Membership{cfg: cfg, log: cfg.Log, known: map[string]Member{}, kick: make(chan struct{}, 1)}
}

// Start creates the memberlist, listening on BindAddr:Port.
func (m *Membership) Start(repl Replicator, meta Meta) error {
	m.repl = repl
	b, err := encodeMeta(meta)
	if err != nil {
		return err
	}
	m.meta = b
	tr, err := newTransport(netip.AddrPortFrom(m.cfg.BindAddr, uint16(m.cfg.Port)), m.log)
	if err != nil {
		return fmt.Errorf("start gossip on %s:%d: %w (another process holds the port? --gossip-port picks another)", m.cfg.BindAddr, m.cfg.Port, err)
	}
	c := memberlist.DefaultLANConfig()
	c.Name = m.cfg.Name
	c.Transport = tr
	c.BindAddr = m.cfg.BindAddr.String()
	c.BindPort = m.cfg.Port
	c.AdvertiseAddr = m.cfg.AdvertiseAddr.String()
	c.AdvertisePort = m.cfg.Port
	c.ProbeInterval = m.cfg.Timers.ProbeInterval
	c.ProbeTimeout = m.cfg.Timers.ProbeTimeout
	c.SuspicionMult = m.cfg.Timers.SuspicionMult
	c.GossipInterval = m.cfg.Timers.GossipInterval
	c.PushPullInterval = m.cfg.Timers.PushPullInterval
	// Gossip packets are small and encrypted; compressing each one cost a
	// new LZW writer (64 KiB of tables) per packet, the main source of
	// garbage with many members. Receivers read both forms.
	c.EnableCompression = false
	c.SecretKey = m.cfg.Key
	c.GossipVerifyIncoming = true
	c.GossipVerifyOutgoing = true
	c.Delegate = (*delegate)(m)
	c.Events = (*events)(m)
	c.Logger = log.New(&logAdapter{log: m.log}, "", 0)
	ml, err := memberlist.Create(c)
	if err != nil {
		tr.Shutdown()
		return fmt.Errorf("start gossip on %s:%d: %w", m.cfg.BindAddr, m.cfg.Port, err)
	}
	m.mu.Lock()
	m.ml = ml
	m.started = true
	m.mu.Unlock()
	return nil
}

// Join contacts the given addresses ("host" or "host:port"); it returns how
// many answered.
func (m *Membership) Join(addrs []string) (int, error) {
	var full []string
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(a, strconv.Itoa(m.cfg.Port))
		}
		full = append(full, a)
	}
	if len(full) == 0 {
		return 0, errors.New("join: no address given")
	}
	n, err := m.ml.Join(full)
	if err != nil && n == 0 {
		if IsTokenRefused(err) {
			return 0, fmt.Errorf("join %s: refused: this node's token is not the cluster's (copy the token from 'netloom init' on a member): %w", strings.Join(full, ","), ErrTokenRefused)
		}
		msg := oneLine(err.Error())
		msg = strings.TrimPrefix(msg, "1 error occurred: * ")
		return 0, fmt.Errorf("join %s: %s (check the address, the gossip port and that the member's agent runs)", strings.Join(full, ","), msg)
	}
	return n, nil
}

// ErrTokenRefused means a member could not decrypt this node's gossip: the
// two use different cluster tokens.
var ErrTokenRefused = errors.New("cluster token refused")

// IsTokenRefused tells whether err comes from a member that holds another
// cluster key.
func IsTokenRefused(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrTokenRefused) {
		return true
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "no installed keys could decrypt") || strings.Contains(s, "remote state is encrypted") || strings.Contains(s, "encryption is configured but remote state is not encrypted")
}

// SetMeta updates what this node gossips about itself.
func (m *Membership) SetMeta(meta Meta) error {
	b, err := encodeMeta(meta)
	if err != nil {
		return err
	}
	m.mu.Lock()
	same := string(b) == string(m.meta)
	m.meta = b
	ml := m.ml
	m.mu.Unlock()
	if same || ml == nil {
		return nil
	}
	if err := ml.UpdateNode(5 * time.Second); err != nil {
		return fmt.Errorf("gossip node metadata: %w", err)
	}
	return nil
}

// Changes is kicked whenever membership or a member's metadata changes.
func (m *Membership) Changes() <-chan struct{} { return m.kick }

// Members lists every member this node knows of, itself included, sorted by
// name. Dead and left members stay listed until memberlist forgets them.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	ml := m.ml
	out := make(map[string]Member, len(m.known))
	for k, v := range m.known {
		out[k] = v
	}
	raw := m.rawMeta
	m.mu.Unlock()
	if ml != nil {
		// memberlist lists only members it holds alive (or suspects).
		for _, n := range ml.Members() {
			old, ok := out[n.Name]
			var mem Member
			if ok && raw[n.Name] == string(n.Meta) {
				mem = memberFrom(n, StateAlive, old.Meta)
			} else {
				mem = toMember(n, StateAlive)
			}
			if ok && old.State == mem.State {
				mem.Since = old.Since
			}
			out[n.Name] = mem
		}
	}
	list := make([]Member, 0, len(out))
	for _, v := range out {
		v.Self = v.Name == m.cfg.Name
		list = append(list, v)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list
}

// Alive returns the names of alive and suspect members, itself included.
func (m *Membership) Alive() map[string]bool {
	alive := map[string]bool{m.cfg.Name: true}
	for _, mem := range m.Members() {
		if mem.State == StateAlive || mem.State == StateSuspect {
			alive[mem.Name] = true
		}
	}
	return alive
}

// NumMembers is the number of alive members (store.Transport).
func (m *Membership) NumMembers() int {
	ml := m.list()
	if ml == nil {
		return 1
	}
	return ml.NumMembers()
}

// SendToAll sends msg reliably (over TCP) to every other alive member
// (store.Transport).
func (m *Membership) SendToAll(msg []byte) {
	ml, others := m.others()
	for _, n := range others {
		go func() {
			if err := ml.SendReliable(n, msg); err != nil {
				m.log.Debug("send to member failed", "member", n.Name, "err", err)
			}
		}()
	}
}

// SendBestEffortToAll sends msg to every other alive member in one UDP
// packet each, without retries (store.Mailer).
func (m *Membership) SendBestEffortToAll(msg []byte) {
	ml, others := m.others()
	for _, n := range others {
		if err := ml.SendBestEffort(n, msg); err != nil {
			m.log.Debug("send to member failed", "member", n.Name, "err", err)
		}
	}
}

// list is the memberlist (nil before Start).
func (m *Membership) list() *memberlist.Memberlist {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ml
}

// others are the alive members but this node, and the memberlist to send
// to them with (none before Start).
func (m *Membership) others() (*memberlist.Memberlist, []*memberlist.Node) {
	ml := m.list()
	if ml == nil {
		return nil, nil
	}
	var out []*memberlist.Node
	for _, n := range ml.Members() {
		if n.Name != m.cfg.Name {
			out = append(out, n)
		}
	}
	return ml, out
}

// greet sends a member this node has just learned of the replicator's
// greeting. It runs on its own goroutine: memberlist reports joins with
// its node lock held.
func (m *Membership) greet(g Greeter, n memberlist.Node) {
	ml := m.list()
	if ml == nil {
		return
	}
	for _, msg := range g.Greeting() {
		if err := ml.SendBestEffort(&n, msg); err != nil {
			m.log.Debug("greet member failed", "member", n.Name, "err", err)
			return
		}
	}
}

// Leave tells the cluster this node is going away and stops gossip.
func (m *Membership) Leave(timeout time.Duration) error {
	ml := m.list()
	if ml == nil {
		return nil
	}
	m.mu.Lock()
	var meta Meta
	_ = json.Unmarshal(m.meta, &meta)
	m.mu.Unlock()
	meta.Leaving = true
	if b, err := encodeMeta(meta); err == nil {
		m.mu.Lock()
		m.meta = b
		m.mu.Unlock()
		_ = ml.UpdateNode(timeout)
	}
	err := ml.Leave(timeout)
	// Give the leave message a moment to spread before the listeners close.
	time.Sleep(m.cfg.Timers.GossipInterval * 3)
	if serr := ml.Shutdown(); serr != nil {
		err = errors.Join(err, serr)
	}
	return err
}

// Shutdown stops gossip without telling anyone (the others will see the node
// fail, which is right for a restart: its subnet and peer are kept meanwhile).
func (m *Membership) Shutdown() error {
	ml := m.list()
	if ml == nil {
		return nil
	}
	return ml.Shutdown()
}

// LocalAddr is the address gossip listens on.
func (m *Membership) LocalAddr() netip.AddrPort {
	return netip.AddrPortFrom(m.cfg.AdvertiseAddr, uint16(m.cfg.Port))
}

func (m *Membership) notify() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Membership) record(n *memberlist.Node, kind string) {
	// memberlist does not keep Node.State up to date (the real state is in
	// an unexported struct), so the state comes from the event.
	state := StateAlive
	if kind == "leave" {
		state = StateDead
		var meta Meta
		if json.Unmarshal(n.Meta, &meta) == nil && meta.Leaving {
			state = StateLeft
		}
	}
	mem := toMember(n, state)
	m.mu.Lock()
	old, ok := m.known[n.Name]
	if ok && old.State == mem.State {
		mem.Since = old.Since
	}
	m.known[n.Name] = mem
	// Copy on write: Members reads the map without the lock.
	raw := make(map[string]string, len(m.rawMeta)+1)
	maps.Copy(raw, m.rawMeta)
	raw[n.Name] = string(n.Meta)
	m.rawMeta = raw
	m.mu.Unlock()
	if n.Name != m.cfg.Name {
		switch kind {
		case "join":
			m.log.Info("member joined", "member", n.Name, "addr", mem.Addr)
			if g, ok := m.repl.(Greeter); ok {
				go m.greet(g, *n)
			}
		case "leave":
			if mem.State == StateLeft {
				m.log.Info("member left", "member", n.Name)
			} else {
				kind = "dead"
				m.log.Warn("member failed", "member", n.Name, "addr", mem.Addr)
			}
		}
		if m.cfg.OnEvent != nil {
			m.cfg.OnEvent(kind, n.Name)
		}
	}
	m.notify()
}

func toMember(n *memberlist.Node, state string) Member {
	var meta Meta
	_ = json.Unmarshal(n.Meta, &meta)
	return memberFrom(n, state, meta)
}

func memberFrom(n *memberlist.Node, state string, meta Meta) Member {
	addr, _ := netip.AddrFromSlice(n.Addr)
	return Member{Name: n.Name, Addr: addr.Unmap(), Port: int(n.Port), State: state, Since: time.Now(), Meta: meta}
}

func encodeMeta(meta Meta) ([]byte, error) {
	b, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node metadata is %d bytes, more than memberlist's %d: shorten the node name", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

type delegate Membership

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		return nil
	}
	return append([]byte(nil), d.meta...)
}

func (d *delegate) NotifyMsg(b []byte) {
	if d.repl != nil {
		d.repl.NotifyMsg(b)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	if d.repl == nil {
		return nil
	}
	return d.repl.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte {
	if d.repl == nil {
		return nil
	}
	return d.repl.LocalState(join)
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	if d.repl != nil {
		d.repl.MergeRemoteState(buf, join)
	}
}

type events Membership

func (e *events) NotifyJoin(n *memberlist.Node)   { (*Membership)(e).record(n, "join") }
func (e *events) NotifyLeave(n *memberlist.Node)  { (*Membership)(e).record(n, "leave") }
func (e *events) NotifyUpdate(n *memberlist.Node) { (*Membership)(e).record(n, "update") }

// logAdapter turns memberlist's log lines into slog records, and the
// decryption failures caused by a wrong token into one clear line per peer
// address per minute.
type logAdapter struct {
	log *slog.Logger

	mu      sync.Mutex
	refused map[string]time.Time
}

func (l *logAdapter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelInfo
	}
	if i := strings.Index(line, "memberlist: "); i >= 0 {
		line = line[i+len("memberlist: "):]
	}
	from := ""
	if i := strings.LastIndex(line, "from="); i >= 0 {
		from = strings.Fields(line[i+len("from="):] + " ")[0]
	}
	if strings.Contains(line, "no installed keys could decrypt") || strings.Contains(line, "No installed keys could decrypt") {
		host := from
		if h, _, err := net.SplitHostPort(from); err == nil {
			host = h
		}
		l.mu.Lock()
		if l.refused == nil {
			l.refused = map[string]time.Time{}
		}
		last, seen := l.refused[host]
		now := time.Now()
		if !seen || now.Sub(last) > time.Minute {
			l.refused[host] = now
		} else {
			host = ""
		}
		l.mu.Unlock()
		if host != "" {
			l.log.Warn("gossip refused: the peer does not use this cluster's token (give it the token from 'netloom init')", "from", host)
		}
		return len(p), nil
	}
	if strings.Contains(line, "Stream connection") || strings.Contains(line, "Initiating push/pull") {
		level = slog.LevelDebug
	}
	l.log.Log(nil, level, "gossip: "+line)
	return len(p), nil
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "\t", "")
	return strings.Join(strings.Fields(s), " ")
}
