package node

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/cluster/clustertest"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/store"
	"github.com/netloom/netloom/mesh/wg"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/node/events"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeOverlay records the peers the mesh room programs.
type fakeOverlay struct {
	mu    sync.Mutex
	peers []wg.Peer
}

func (f *fakeOverlay) SetPeers(p []wg.Peer) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = p
	return 0, nil
}
func (f *fakeOverlay) SetRoutes([]wg.Route) (int, error)    { return 0, nil }
func (f *fakeOverlay) Ensure(context.Context) (bool, error) { return false, nil }
func (f *fakeOverlay) has(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.peers {
		if p.Name == name {
			return true
		}
	}
	return false
}

// stuckTable is an nftables table whose Apply hangs until release is
// closed, as a netlink socket that stopped answering would.
type stuckTable struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stuckTable) Apply(nft.Model) error {
	s.once.Do(func() { close(s.entered) })
	<-s.release
	return nil
}
func (s *stuckTable) Drift() (string, error) { return "", nil }
func (s *stuckTable) Invalidate()            {}

type noHost struct{}

func (noHost) Pass(context.Context, *cluster.Snapshot, bool) (bool, error) { return false, nil }

func wgMember(t *testing.T, name, addr string) mesh.Member {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return mesh.Member{Name: name, Addr: netip.MustParseAddr(addr), State: mesh.StateAlive, Self: name == "n1",
		Meta: mesh.Meta{Addr: addr, WGKey: k.PublicKey().String(), WGPort: 51820}}
}

// TestSlowFirewallDoesNotStallMesh: while the nftables apply hangs, a new
// member still gets its WireGuard peer: the rooms run apart.
func TestSlowFirewallDoesNotStallMesh(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, "n1", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg, err := Config{Name: "n1", DataDir: dir, RunDir: dir, Socket: dir + "/s", AdvertiseAddr: "10.77.0.11",
		ClusterCIDR: "10.244.0.0/16", NodeMask: 24, WireGuard: "userspace", GossipPort: 7946, WGPort: 51820,
		WGIface: "netloom0", SubnetGrace: time.Hour, Exe: "/bin/true"}.check()
	if err != nil {
		t.Fatal(err)
	}
	pods, err := ipam.OpenAllocator(filepath.Join(dir, PodsFile), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: cfg, log: discardLog(), events: events.NewLog("n1", 100), store: st, repl: store.NewReplicator(st, loneTransport{}), pods: pods}
	now := time.Now().UnixMilli()
	for _, l := range []ipam.Lease{
		{Node: "n1", Subnet: netip.MustParsePrefix("10.244.1.0/24"), Claimed: now - 60000, Renewed: now},
		{Node: "n2", Subnet: netip.MustParsePrefix("10.244.2.0/24"), Claimed: now - 60000, Renewed: now},
	} {
		p, err := cluster.Leases.Put(store.Key{}, l)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.repl.Apply([]store.Put{p}, nil); err != nil {
			t.Fatal(err)
		}
	}
	members := clustertest.NewMembers(wgMember(t, "n1", "10.77.0.11"))
	a.hub = cluster.NewHub(cluster.HubConfig{Name: "n1", LB: a.lbConfig(), SubnetGrace: time.Hour}, cluster.NewStoreSource(st), members)
	ov := &fakeOverlay{}
	table := &stuckTable{entered: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(table.release)
		cancel()
		wg.Wait()
	})
	for _, run := range append(a.rooms(kernel{overlay: ov, table: table, host: noHost{}}), a.hub.Run) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = run(ctx)
		}()
	}
	a.setJoined()
	select {
	case <-table.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the firewall room never applied its table")
	}
	members.Set(wgMember(t, "n1", "10.77.0.11"), wgMember(t, "n2", "10.77.0.12"))
	deadline := time.Now().Add(10 * time.Second)
	for !ov.has("n2") {
		if time.Now().After(deadline) {
			t.Fatal("no WireGuard peer for the new member while the nftables apply hangs")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-table.release:
		t.Fatal("the apply was released before the peer was checked")
	default:
	}
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
