// Package arp announces the VIPs this node owns on the underlay: it answers
// ARP requests for them and sends gratuitous ARP when it takes them, so that
// the neighbours' caches and the switches' forwarding tables follow a
// failover without waiting for timeouts.
//
// The decision whether to answer a request (ShouldAnswer) is separate from
// the socket loop (Announcer), MetalLB layer 2 style, so that it is
// table-tested without a raw socket.
package arp

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// Reason says why a request is answered or not.
type Reason int

// Reasons of ShouldAnswer.
const (
	// ReasonAnswer: a request for an owned VIP; answer it.
	ReasonAnswer Reason = iota
	// ReasonInvalid: not an ARP packet for IPv4 over Ethernet.
	ReasonInvalid
	// ReasonNotRequest: a reply (ours or someone else's); never answered.
	ReasonNotRequest
	// ReasonEthernetDestination: the frame is neither broadcast nor for
	// our interface.
	ReasonEthernetDestination
	// ReasonFromSelf: sent from our own interface (our kernel's requests
	// and our own gratuitous ARP, which a packet socket also sees).
	ReasonFromSelf
	// ReasonGratuitous: sender and target address are the same: another
	// host announces an address; not a question.
	ReasonGratuitous
	// ReasonNotOwned: the target is not a VIP this node owns now.
	ReasonNotOwned
)

var reasonText = [...]string{
	ReasonAnswer:              "answer",
	ReasonInvalid:             "not an IPv4 over Ethernet ARP packet",
	ReasonNotRequest:          "not a request",
	ReasonEthernetDestination: "ethernet destination is neither broadcast nor this interface",
	ReasonFromSelf:            "sent by this interface",
	ReasonGratuitous:          "gratuitous announcement by another host",
	ReasonNotOwned:            "target is not a VIP this node owns",
}

func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonText) {
		return reasonText[r]
	}
	return "unknown"
}

// ShouldAnswer decides whether to answer an ARP packet received on the
// interface whose hardware address is mac, given the VIPs this node owns.
// Only requests, broadcast or sent to mac, not sent by mac, for an owned
// VIP, that are not gratuitous announcements, are answered. An ARP probe
// (sender address 0.0.0.0, RFC 5227) for an owned VIP is answered: that
// defends the address.
func ShouldAnswer(pkt *arp.Packet, eth *ethernet.Frame, owned map[netip.Addr]bool, mac net.HardwareAddr) (bool, Reason) {
	if pkt == nil || eth == nil || pkt.HardwareType != 1 || pkt.ProtocolType != uint16(ethernet.EtherTypeIPv4) ||
		!pkt.TargetIP.Is4() || !pkt.SenderIP.Is4() {
		return false, ReasonInvalid
	}
	if pkt.Operation != arp.OperationRequest {
		return false, ReasonNotRequest
	}
	if !bytes.Equal(eth.Destination, ethernet.Broadcast) && !bytes.Equal(eth.Destination, mac) {
		return false, ReasonEthernetDestination
	}
	if bytes.Equal(eth.Source, mac) || bytes.Equal(pkt.SenderHardwareAddr, mac) {
		return false, ReasonFromSelf
	}
	if pkt.SenderIP == pkt.TargetIP {
		return false, ReasonGratuitous
	}
	if !owned[pkt.TargetIP] {
		return false, ReasonNotOwned
	}
	return true, ReasonAnswer
}
