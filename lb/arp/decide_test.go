package arp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

var (
	ourMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	theirMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	vip      = netip.MustParseAddr("10.77.0.100")
	other    = netip.MustParseAddr("10.77.0.101")
	client   = netip.MustParseAddr("10.77.0.50")
)

func request(senderMAC net.HardwareAddr, sender, target netip.Addr) *arp.Packet {
	p, err := arp.NewPacket(arp.OperationRequest, senderMAC, sender, ethernet.Broadcast, target)
	if err != nil {
		panic(err)
	}
	return p
}

func TestShouldAnswer(t *testing.T) {
	owned := map[netip.Addr]bool{vip: true}
	bcast := &ethernet.Frame{Destination: ethernet.Broadcast, Source: theirMAC, EtherType: ethernet.EtherTypeARP}
	unicastUs := &ethernet.Frame{Destination: ourMAC, Source: theirMAC, EtherType: ethernet.EtherTypeARP}
	unicastOther := &ethernet.Frame{Destination: net.HardwareAddr{0x02, 0, 0, 0, 0, 0x09}, Source: theirMAC, EtherType: ethernet.EtherTypeARP}
	fromUs := &ethernet.Frame{Destination: ethernet.Broadcast, Source: ourMAC, EtherType: ethernet.EtherTypeARP}
	reply, _ := arp.NewPacket(arp.OperationReply, theirMAC, vip, ourMAC, client)
	notIPv4 := request(theirMAC, client, vip)
	notIPv4.ProtocolType = 0x86dd

	tests := []struct {
		name string
		pkt  *arp.Packet
		eth  *ethernet.Frame
		want bool
		why  Reason
	}{
		{"broadcast request for owned VIP", request(theirMAC, client, vip), bcast, true, ReasonAnswer},
		{"unicast request to us (cache refresh)", request(theirMAC, client, vip), unicastUs, true, ReasonAnswer},
		{"probe for owned VIP (RFC 5227)", request(theirMAC, netip.IPv4Unspecified(), vip), bcast, true, ReasonAnswer},
		{"request for VIP not owned", request(theirMAC, client, other), bcast, false, ReasonNotOwned},
		{"request for a host address", request(theirMAC, client, client.Next()), bcast, false, ReasonNotOwned},
		{"reply", reply, bcast, false, ReasonNotRequest},
		{"unicast to another host", request(theirMAC, client, vip), unicastOther, false, ReasonEthernetDestination},
		{"our own gratuitous request", request(ourMAC, vip, vip), fromUs, false, ReasonFromSelf},
		{"our kernel's request", request(ourMAC, client, vip), fromUs, false, ReasonFromSelf},
		{"another host announces our VIP", request(theirMAC, vip, vip), bcast, false, ReasonGratuitous},
		{"not IPv4", notIPv4, bcast, false, ReasonInvalid},
		{"no packet", nil, bcast, false, ReasonInvalid},
		{"no frame", request(theirMAC, client, vip), nil, false, ReasonInvalid},
	}
	for _, tt := range tests {
		got, why := ShouldAnswer(tt.pkt, tt.eth, owned, ourMAC)
		if got != tt.want || why != tt.why {
			t.Errorf("%s: ShouldAnswer = %v, %q; want %v, %q", tt.name, got, why, tt.want, tt.why)
		}
	}
	if got, why := ShouldAnswer(request(theirMAC, client, vip), bcast, nil, ourMAC); got || why != ReasonNotOwned {
		t.Errorf("nothing owned: %v %v", got, why)
	}
}

func TestReasonString(t *testing.T) {
	for r := ReasonAnswer; r <= ReasonNotOwned; r++ {
		if s := r.String(); s == "" || s == "unknown" {
			t.Errorf("reason %d has no text", r)
		}
	}
	if Reason(99).String() != "unknown" {
		t.Errorf("unknown reason")
	}
}

var addrOpts = cmpopts.EquateComparable(netip.Addr{})

// sends runs the scheduler from t0 to t0+span in steps of 10ms and
// returns, per VIP, the offsets of its announcements.
func sends(s *scheduler, t0 time.Time, from, span time.Duration) map[netip.Addr][]time.Duration {
	out := map[netip.Addr][]time.Duration{}
	for d := from; d <= span; d += 10 * time.Millisecond {
		for _, v := range s.due(t0.Add(d)) {
			out[v] = append(out[v], d)
		}
	}
	return out
}

func TestSchedulerBurst(t *testing.T) {
	ms := time.Millisecond
	t0 := time.Unix(1000, 0)
	s := &scheduler{owned: map[netip.Addr]*garp{}, burst: DefaultBurst}
	added, removed, skipped := s.set([]netip.Addr{vip, netip.MustParseAddr("fd00::1"), netip.MustParseAddr("::ffff:10.77.0.101")}, t0)
	if diff := cmp.Diff([]netip.Addr{vip, other}, added, addrOpts); diff != "" || removed != nil || len(skipped) != 1 {
		t.Fatalf("set: added %v removed %v skipped %v", added, removed, skipped)
	}
	if diff := cmp.Diff(map[netip.Addr]bool{vip: true, other: true}, s.ownedSet(), addrOpts); diff != "" {
		t.Errorf("ownedSet: %s", diff)
	}
	// The same set again changes nothing; a new VIP starts its own burst.
	third := netip.MustParseAddr("10.77.0.102")
	got := sends(s, t0, 0, 300*ms)
	added, removed, _ = s.set([]netip.Addr{vip, other, third}, t0.Add(300*ms))
	if diff := cmp.Diff([]netip.Addr{third}, added, addrOpts); diff != "" || removed != nil {
		t.Fatalf("second set: added %v removed %v", added, removed)
	}
	for v, ds := range sends(s, t0, 310*ms, 10*time.Second) {
		got[v] = append(got[v], ds...)
	}
	want := map[netip.Addr][]time.Duration{
		vip:   {0, 500 * ms, 1000 * ms, 2000 * ms, 4000 * ms},
		other: {0, 500 * ms, 1000 * ms, 2000 * ms, 4000 * ms},
		third: {310 * ms, 810 * ms, 1310 * ms, 2310 * ms, 4310 * ms},
	}
	if diff := cmp.Diff(want, got, addrOpts); diff != "" {
		t.Errorf("burst (-want +got):\n%s", diff)
	}
	if _, ok := s.next(); ok {
		t.Errorf("something planned after the burst without interval")
	}

	// Periodic repeats after the burst.
	t1 := t0.Add(10 * time.Second)
	s.setInterval(3*time.Second, t1)
	got = sends(s, t1, 0, 7*time.Second)
	if diff := cmp.Diff([]time.Duration{3 * time.Second, 6 * time.Second}, got[vip]); diff != "" {
		t.Errorf("interval (-want +got):\n%s", diff)
	}
	// Reannounce restarts the burst for all.
	t2 := t1.Add(7 * time.Second)
	s.setInterval(0, t2)
	s.reannounce(t2)
	got = sends(s, t2, 0, 10*time.Second)
	if diff := cmp.Diff(want[vip], got[other]); diff != "" {
		t.Errorf("reannounce (-want +got):\n%s", diff)
	}
	// Released VIPs are forgotten.
	_, removed, _ = s.set([]netip.Addr{third}, t2)
	if diff := cmp.Diff([]netip.Addr{vip, other}, removed, addrOpts); diff != "" {
		t.Errorf("removed: %s", diff)
	}
	if diff := cmp.Diff([]netip.Addr{third}, s.vips(), addrOpts); diff != "" {
		t.Errorf("vips: %s", diff)
	}
}

// SetOwned long before Run: the burst counts from the first send.
func TestSchedulerLateStart(t *testing.T) {
	ms := time.Millisecond
	t0 := time.Unix(1000, 0)
	s := &scheduler{owned: map[netip.Addr]*garp{}, burst: DefaultBurst}
	s.set([]netip.Addr{vip}, t0)
	got := sends(s, t0, 30*time.Second, 40*time.Second)
	want := []time.Duration{30000 * ms, 30500 * ms, 31000 * ms, 32000 * ms, 34000 * ms}
	if diff := cmp.Diff(want, got[vip]); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// A loop held up mid-burst merges the overdue steps.
	s.reannounce(t0)
	if d := s.due(t0); len(d) != 1 {
		t.Fatalf("due %v", d)
	}
	if d := s.due(t0.Add(3 * time.Second)); len(d) != 1 {
		t.Fatalf("due %v", d)
	}
	if n, ok := s.next(); !ok || !n.Equal(t0.Add(4*time.Second)) {
		t.Errorf("next %v %v, want the 4s step", n, ok)
	}
}
