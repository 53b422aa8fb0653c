package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/nft"
	"sigs.k8s.io/yaml"
)

// The compiled model, run through the tracer's model of nf_tables, must
// give Evaluate's verdict for every packet: same allowed/denied, and the
// same policy and rule for each isolated direction that allows.
func TestTraceMatchesEvaluate(t *testing.T) {
	seeds, packets := 400, 60
	if testing.Short() {
		seeds = 60
	}
	checked, allowed := 0, 0
	for seed := range seeds {
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		s := RandomSnapshot(r, GenOptions{
			Namespaces:       1 + r.IntN(4),
			PodsPerNamespace: 1 + r.IntN(5),
			Nodes:            1 + r.IntN(3),
			Policies:         1 + r.IntN(8),
		})
		ev := NewEvaluator(s)
		ct := NewClusterTracer(s, Options{LogDrops: seed%2 == 0})
		for range packets {
			pkt := RandomPacket(r, s)
			want := ev.Evaluate(pkt)
			got := ct.Trace(pkt)
			checked++
			if want.Allowed {
				allowed++
			}
			bad := got.Allowed != want.Allowed
			if !bad && got.Allowed {
				bad = !sameDir(got.Egress, want.Egress) || !sameDir(got.Ingress, want.Ingress)
			}
			if bad {
				t.Fatalf("seed %d: %s\nEvaluate: %s\nTrace:    %s\n%s\n%s",
					seed, pktString(pkt), want.Reason, got.Reason, hopsString(got), snapshotYAML(s))
			}
		}
	}
	t.Logf("%d packets, %d allowed", checked, allowed)
	if allowed == 0 || allowed == checked {
		t.Errorf("no variety: %d of %d allowed", allowed, checked)
	}
}

func sameDir(got DirTrace, want DirDecision) bool {
	if !want.Isolated {
		return !got.Isolated
	}
	return got.Isolated && got.Policy == want.Policy && got.Rule == want.Rule
}

func pktString(p Packet) string {
	return fmt.Sprintf("%s -> %s %s/%d", p.Src, p.Dst, p.Protocol, p.Port)
}

func hopsString(ct ClusterTrace) string {
	var b strings.Builder
	for _, h := range ct.Hops {
		fmt.Fprintf(&b, "node %s: allowed=%v\n", h.Node, h.Allowed)
		for _, s := range h.Steps {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	return b.String()
}

func snapshotYAML(s *Snapshot) string {
	var b strings.Builder
	for _, p := range s.Pods {
		fmt.Fprintf(&b, "pod %s %s node=%s labels=%v ports=%v\n", p.Key(), p.IP, p.Node, p.Labels, p.Ports)
	}
	for ns, l := range s.Namespaces {
		fmt.Fprintf(&b, "namespace %s %v\n", ns, l)
	}
	for _, p := range s.Policies {
		y, _ := yaml.Marshal(p)
		fmt.Fprintf(&b, "---\n%s", y)
	}
	return b.String()
}

// Trace follows the kernel's rules, not Evaluate: a hand-made model shows
// the machine's pieces (vmap, interval sets, concatenations, return).
func TestTraceSteps(t *testing.T) {
	s := fixture()
	c := Compile(s, "n1", Options{})
	// y/b (n1) is isolated for ingress by allow-x-http: x/a may reach TCP 80.
	tr := Trace(c, Packet{Src: addr4("10.244.2.10"), Dst: addr4("10.244.1.11"), Protocol: TCP, Port: 80})
	if !tr.Allowed || tr.Policy != "y/allow-x-http" || tr.Rule != 0 {
		t.Fatalf("trace = %+v", tr)
	}
	if !strings.Contains(strings.Join(tr.Steps, "\n"), "vmap @pol-ingress -> jump pol-in-") {
		t.Errorf("steps lack the vmap jump:\n%s", strings.Join(tr.Steps, "\n"))
	}
	tr = Trace(c, Packet{Src: addr4("10.244.2.10"), Dst: addr4("10.244.1.11"), Protocol: TCP, Port: 81})
	if tr.Allowed || !tr.Ingress.Isolated || tr.Ingress.Allowed || tr.Rule != -1 {
		t.Fatalf("trace = %+v", tr)
	}
	last := tr.Steps[len(tr.Steps)-1]
	if !strings.Contains(last, `-dropped" drop`) {
		t.Errorf("last step %q, want the class's drop rule", last)
	}
}

func addr4(s string) netip.Addr { return netip.MustParseAddr(s) }

// Trace runs every forward base chain of a merged table: the masquerade
// ruleset's forward chain accepts, the policy chain decides.
func TestTraceMergedModel(t *testing.T) {
	s := fixture()
	c := Compile(s, "n1", Options{})
	c.Model = nft.Merge(firewall.Ruleset(firewall.Config{ClusterCIDR: addrPrefix("10.244.0.0/16"), Bridge: "nl-br"}), c.Model)
	pkt := Packet{Src: addr4("10.244.2.10"), Dst: addr4("10.244.1.11"), Protocol: TCP, Port: 81}
	if tr := Trace(c, pkt); tr.Allowed || !tr.Ingress.Isolated {
		t.Errorf("trace = %+v", tr)
	}
	pkt.Port = 80
	if tr := Trace(c, pkt); !tr.Allowed || tr.Policy != "y/allow-x-http" {
		t.Errorf("trace = %+v", tr)
	}
}

// Two pods with one address (a stale entry): one map element, the first
// pod's, as Evaluate finds pods.
func TestDuplicateAddress(t *testing.T) {
	s := fixture()
	dup := s.Pods[3] // y/b
	dup.Name, dup.Labels = "b-old", nil
	s.Pods = append(s.Pods, dup)
	c := Compile(s, "n1", Options{})
	if err := c.Model.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := len(setElems(c.Model, MapIngress)); n != 1 {
		t.Errorf("ingress map has %d elements, want 1", n)
	}
}
