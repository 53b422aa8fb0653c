package store

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// mlTransport adapts a memberlist to Transport, the way the mesh package
// does.
type mlTransport struct {
	ml atomic.Pointer[memberlist.Memberlist]
}

func (t *mlTransport) NumMembers() int {
	if ml := t.ml.Load(); ml != nil {
		return ml.NumMembers()
	}
	return 1
}

func (t *mlTransport) SendToAll(msg []byte) {
	ml := t.ml.Load()
	if ml == nil {
		return
	}
	self := ml.LocalNode().Name
	for _, n := range ml.Members() {
		if n.Name != self {
			ml.SendReliable(n, msg)
		}
	}
}

// testDelegate forwards memberlist's callbacks to a Replicator.
type testDelegate struct{ r *Replicator }

func (d testDelegate) NodeMeta(limit int) []byte { return nil }
func (d testDelegate) NotifyMsg(b []byte)        { d.r.NotifyMsg(b) }
func (d testDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.r.GetBroadcasts(overhead, limit)
}
func (d testDelegate) LocalState(join bool) []byte            { return d.r.LocalState(join) }
func (d testDelegate) MergeRemoteState(buf []byte, join bool) { d.r.MergeRemoteState(buf, join) }

type mlNode struct {
	s    *Store
	r    *Replicator
	ml   *memberlist.Memberlist
	addr string
}

// freePort returns a port that was free for both TCP and UDP on 127.0.0.1
// a moment ago (memberlist cannot bind port 0 for both itself).
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("no free port")
	return 0
}

func startML(t *testing.T, name string, join ...string) *mlNode {
	t.Helper()
	s := openTest(t, name, nil)
	tr := &mlTransport{}
	r := NewReplicator(s, tr)
	var ml *memberlist.Memberlist
	var port int
	var err error
	for range 5 { // a picked port can be taken before we bind it
		port = freePort(t)
		cfg := memberlist.DefaultLocalConfig()
		cfg.Name = name
		cfg.BindAddr = "127.0.0.1"
		cfg.BindPort = port
		cfg.AdvertiseAddr = "127.0.0.1"
		cfg.AdvertisePort = port
		cfg.GossipInterval = 20 * time.Millisecond
		cfg.ProbeInterval = 200 * time.Millisecond
		cfg.ProbeTimeout = 100 * time.Millisecond
		cfg.PushPullInterval = 500 * time.Millisecond
		cfg.TCPTimeout = time.Second
		cfg.Delegate = testDelegate{r}
		cfg.LogOutput = io.Discard
		if ml, err = memberlist.Create(cfg); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("memberlist %s: %v", name, err)
	}
	tr.ml.Store(ml)
	t.Cleanup(func() { ml.Shutdown() })
	n := &mlNode{s: s, r: r, ml: ml, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	if len(join) > 0 {
		if _, err := ml.Join(join); err != nil {
			t.Fatalf("join %s: %v", name, err)
		}
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMemberlistReplication(t *testing.T) {
	if testing.Short() {
		t.Skip("starts memberlist instances")
	}
	n1 := startML(t, "n1")
	n2 := startML(t, "n2", n1.addr)
	n3 := startML(t, "n3", n1.addr)
	nodes := []*mlNode{n1, n2, n3}
	waitFor(t, "3 members everywhere", func() bool {
		for _, n := range nodes {
			if n.ml.NumMembers() != 3 {
				return false
			}
		}
		return true
	})

	big := json.RawMessage(`"` + strings.Repeat("y", 5000) + `"`)
	var puts []Put
	for i := range 20 {
		puts = append(puts, Put{key(fmt.Sprint("p", i)), json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
	}
	puts = append(puts, Put{key("big"), big})
	mustApply(t, n1.r, puts, nil)
	waitFor(t, "n3 to see n1's writes", func() bool { return n3.s.Len() == len(puts) })

	mustApply(t, n1.r, nil, []Key{key("p0")})
	waitFor(t, "n3 to see the delete", func() bool {
		_, ok := n3.s.Get(key("p0"))
		return !ok
	})

	// Let every broadcast run out so that a joiner can only learn the state
	// through push/pull.
	waitFor(t, "broadcast queues to drain", func() bool {
		for _, n := range nodes {
			if n.r.NumQueued() != 0 {
				return false
			}
		}
		return true
	})
	n4 := startML(t, "n4", n3.addr)
	waitFor(t, "the late joiner to catch up", func() bool {
		return n4.s.Len() == len(puts)-1 && n4.s.Tombstones() == 1
	})
	if e, ok := n4.s.Get(key("big")); !ok || string(e.Value) != string(big) {
		t.Errorf("late joiner lacks the big entry")
	}
}
