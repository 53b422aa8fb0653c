package mesh

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func newTestTransport(t *testing.T) *transport {
	t.Helper()
	tr, err := newTransport(netip.MustParseAddrPort("127.0.0.1:0"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown() })
	return tr
}

// Packets arrive whole, each in a buffer of its own size (not the 64 KiB
// memberlist's transport hands on), and a buffer handed on is not reused
// by the next packet; streams arrive as connections.
func TestTransport(t *testing.T) {
	a, b := newTestTransport(t), newTestTransport(t)
	ip, port, err := b.FinalAdvertiseAddr("", 0)
	if err != nil || !ip.Equal(net.IPv4(127, 0, 0, 1)) || port != int(b.addr.Port()) || port == 0 {
		t.Fatalf("FinalAdvertiseAddr = %v %d %v, want 127.0.0.1 and the port listened on", ip, port, err)
	}
	if ip, port, err := b.FinalAdvertiseAddr("192.0.2.7", 7946); err != nil || ip.String() != "192.0.2.7" || len(ip) != 4 || port != 7946 {
		t.Errorf("FinalAdvertiseAddr(192.0.2.7) = %v (%d bytes) %d %v", ip, len(ip), port, err)
	}
	if _, _, err := b.FinalAdvertiseAddr("not-an-ip", 1); err == nil || !strings.Contains(err.Error(), "not-an-ip") {
		t.Errorf("FinalAdvertiseAddr of a bad address: %v", err)
	}
	to := b.addr.String()
	recv := func() *memberlist.Packet {
		t.Helper()
		select {
		case p := <-b.PacketCh():
			return p
		case <-time.After(5 * time.Second):
			t.Fatal("no packet")
			return nil
		}
	}
	if _, err := a.WriteTo([]byte("first packet"), to); err != nil {
		t.Fatal(err)
	}
	p1 := recv()
	if _, err := a.WriteToAddress([]byte("second"), memberlist.Address{Addr: to, Name: "b"}); err != nil {
		t.Fatal(err)
	}
	p2 := recv()
	if string(p1.Buf) != "first packet" || cap(p1.Buf) != len("first packet") || string(p2.Buf) != "second" || cap(p2.Buf) != len("second") {
		t.Errorf("packets %q (cap %d), %q (cap %d)", p1.Buf, cap(p1.Buf), p2.Buf, cap(p2.Buf))
	}
	if p1.From.String() != a.addr.String() || p1.Timestamp.IsZero() {
		t.Errorf("packet from %v at %v, want %v", p1.From, p1.Timestamp, a.addr)
	}

	c, err := a.DialAddressTimeout(memberlist.Address{Addr: to}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("stream")); err != nil {
		t.Fatal(err)
	}
	var s net.Conn
	select {
	case s = <-b.StreamCh():
	case <-time.After(5 * time.Second):
		t.Fatal("no stream")
	}
	defer s.Close()
	got := make([]byte, 6)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "stream" {
		t.Errorf("stream read %q, %v", got, err)
	}
}

// Shutdown returns with nobody reading the channels, and frees the port.
func TestTransportShutdown(t *testing.T) {
	a, b := newTestTransport(t), newTestTransport(t)
	if _, err := a.WriteTo([]byte("unread"), b.addr.String()); err != nil {
		t.Fatal(err)
	}
	c, err := a.DialTimeout(b.addr.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond) // both are now waiting to be handed on
	done := make(chan struct{})
	go func() { b.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	again, err := newTransport(b.addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("the port is still held after Shutdown: %v", err)
	}
	again.Shutdown()
}
