package mesh

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// recRepl is a Replicator that records the user messages it receives.
type recRepl struct {
	mu       sync.Mutex
	got      []string
	greeting []byte // what a greeterRepl greets with
}

func (r *recRepl) NotifyMsg(b []byte) {
	r.mu.Lock()
	r.got = append(r.got, string(b))
	r.mu.Unlock()
}
func (r *recRepl) GetBroadcasts(int, int) [][]byte { return nil }
func (r *recRepl) LocalState(bool) []byte          { return nil }
func (r *recRepl) MergeRemoteState([]byte, bool)   {}

func (r *recRepl) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// greeterRepl is a recRepl that greets new members (Greeter).
type greeterRepl struct{ *recRepl }

func (g greeterRepl) Greeting() [][]byte { return [][]byte{g.greeting} }

func startTestMember(t *testing.T, name string, repl Replicator) *Membership {
	t.Helper()
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		m := New(Config{Name: name, AdvertiseAddr: netip.MustParseAddr("127.0.0.1"), Port: port,
			Key: make([]byte, 32), Log: slog.New(slog.DiscardHandler)})
		if err := m.Start(repl, Meta{Addr: "127.0.0.1"}); err != nil {
			continue // the port was taken meanwhile
		}
		t.Cleanup(func() { _ = m.Shutdown() })
		return m
	}
	t.Fatal("no free port")
	return nil
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// A member greets every member it learns of with its Replicator's
// greeting, and mails (SendBestEffortToAll) every member it knows.
func TestMembershipGreetsAndMails(t *testing.T) {
	ra := greeterRepl{&recRepl{greeting: []byte("hello from a")}}
	rb := &recRepl{} // not a Greeter: greets nobody
	a := startTestMember(t, "a", ra)
	b := startTestMember(t, "b", rb)
	if _, err := b.Join([]string{a.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to get a's greeting", func() bool { return slices.Contains(rb.received(), "hello from a") })

	a.SendBestEffortToAll([]byte("mail"))
	waitFor(t, "b to get a's mail", func() bool { return slices.Contains(rb.received(), "mail") })
	if got := ra.received(); len(got) != 0 {
		t.Errorf("a received %q, want nothing (b greets nobody, nobody mails a)", got)
	}
}
