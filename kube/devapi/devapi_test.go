package devapi

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

func TestGoModText(t *testing.T) {
	kubeMod := []byte(`module k8s.io/kubernetes

go 1.26.0

require (
	k8s.io/api v0.0.0
	github.com/google/go-cmp v0.7.0
)

replace github.com/some/fork => github.com/other/fork v1.0.0

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/client-go => ./staging/src/k8s.io/client-go
)

replace k8s.io/kms => ./staging/src/k8s.io/kms
`)
	got, err := goModText(kubeMod, "v1.37.2")
	if err != nil {
		t.Fatal(err)
	}
	want := `module netloom.local/kubebuild

go 1.26.0

require k8s.io/kubernetes v1.37.2

replace (
	k8s.io/api => k8s.io/api v0.37.2
	k8s.io/client-go => k8s.io/client-go v0.37.2
	k8s.io/kms => k8s.io/kms v0.37.2
)
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("go.mod (-want +got):\n%s", diff)
	}

	if _, err := goModText([]byte("module k8s.io/kubernetes\n"), "v1.37.2"); err == nil {
		t.Error("a go.mod without staging replaces: no error")
	}
	if _, err := goModText(kubeMod, "v2.0.0"); err == nil {
		t.Error("version v2.0.0: no error")
	}
}

// TestGoModTextReal reads the real k8s.io/kubernetes go.mod when the module
// cache has it.
func TestGoModTextReal(t *testing.T) {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Skip("no go command")
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "cache/download/k8s.io/kubernetes/@v", KubeVersion+".mod")
	kubeMod, err := os.ReadFile(p)
	if err != nil {
		t.Skipf("k8s.io/kubernetes %s go.mod is not in the module cache", KubeVersion)
	}
	got, err := goModText(kubeMod, KubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"k8s.io/api", "k8s.io/apiserver", "k8s.io/client-go", "k8s.io/kube-controller-manager", "k8s.io/endpointslice"} {
		if line := "\t" + m + " => " + m + " v0.37.2\n"; !strings.Contains(got, line) {
			t.Errorf("go.mod lacks %q", line)
		}
	}
	if strings.Contains(got, "./staging") {
		t.Error("go.mod still points into ./staging")
	}
}

func TestBuildCached(t *testing.T) {
	dir := t.TempDir()
	o := Options{CacheDir: dir, Progress: func(s string) { t.Errorf("progress %q: Build did not use the cache", s) }}
	if _, ok := Cached(o); ok {
		t.Fatal("an empty cache dir has binaries")
	}
	want := binariesIn(filepath.Join(dir, "kube-"+KubeVersion))
	os.MkdirAll(want.Dir, 0o755)
	for _, p := range []string{want.APIServer, want.ControllerManager, want.Etcd} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLockFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	unlock, err := lockFile(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var said []string
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path, func(s string) { said = append(said, s) }); err == nil {
		t.Fatal("took a held lock")
	}
	if len(said) != 1 || !strings.Contains(said[0], "waiting for another process") {
		t.Errorf("progress %q", said)
	}
	unlock()
	unlock2, err := lockFile(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}

func TestPKI(t *testing.T) {
	p, err := newPKI(netip.MustParseAddr("10.250.0.1"), netip.MustParsePrefix("10.96.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	ca := parseCert(t, p.CACert)
	srv := parseCert(t, p.ServingCert)
	var ips []string
	for _, ip := range srv.IPAddresses {
		ips = append(ips, ip.String())
	}
	if diff := cmp.Diff([]string{"10.250.0.1", "127.0.0.1", "10.96.0.1"}, ips); diff != "" {
		t.Errorf("serving cert IPs (-want +got):\n%s", diff)
	}
	if !slices.Contains(srv.DNSNames, "kubernetes.default.svc") {
		t.Errorf("serving cert DNS names %v lack kubernetes.default.svc", srv.DNSNames)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, name := range []string{"kubernetes.default.svc", "10.250.0.1", "10.96.0.1", "127.0.0.1"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("verify serving cert for %s: %v", name, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: "10.250.0.2"}); err == nil {
		t.Error("serving cert verifies for 10.250.0.2")
	}
	if !ca.IsCA {
		t.Error("CA cert is not a CA")
	}
	// the service-account public key is the signing key's
	priv := parseKey(t, p.SAKey)
	blk, _ := pem.Decode(p.SAPub)
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Error("sa.pub does not match sa.key")
	}
}

func TestServingIPsDedup(t *testing.T) {
	got := servingIPs(netip.MustParseAddr("127.0.0.1"), netip.MustParsePrefix("10.96.5.0/16"))
	want := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.96.0.1")}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func parseCert(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(p)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", p)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func parseKey(t *testing.T, p []byte) crypto.Signer {
	t.Helper()
	blk, _ := pem.Decode(p)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}

func TestTokenFile(t *testing.T) {
	got := tokenFile([]tokenUser{
		{Token: "t1", User: "admin", UID: "admin", Groups: []string{"system:masters"}},
		{Token: "t2", User: "alice", UID: "u2", Groups: []string{"a", "b"}},
		{Token: "t3", User: "bob", UID: "u3"},
	})
	want := "t1,admin,admin,\"system:masters\"\nt2,alice,u2,\"a,b\"\nt3,bob,u3\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if tok := newToken(); len(tok) != 32 || tok == newToken() {
		t.Errorf("newToken() = %q", tok)
	}
}

func TestKubeconfig(t *testing.T) {
	p, err := newPKI(netip.MustParseAddr("fd00::1"), netip.MustParsePrefix("fd00:96::/112"))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{Addr: netip.MustParseAddr("fd00::1"), Port: 6443}, pki: p}
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string
				CAData []byte `json:"certificate-authority-data"`
			}
		}
		Users []struct {
			Name string
			User struct{ Token string }
		}
		CurrentContext string `json:"current-context"`
	}
	if err := yaml.Unmarshal([]byte(s.kubeconfig("alice", "tok")), &kc); err != nil {
		t.Fatal(err)
	}
	if len(kc.Clusters) != 1 || kc.Clusters[0].Cluster.Server != "https://[fd00::1]:6443" || !bytes.Equal(kc.Clusters[0].Cluster.CAData, p.CACert) {
		t.Errorf("clusters = %+v", kc.Clusters)
	}
	if len(kc.Users) != 1 || kc.Users[0].Name != "alice" || kc.Users[0].User.Token != "tok" || kc.CurrentContext == "" {
		t.Errorf("users = %+v, current-context %q", kc.Users, kc.CurrentContext)
	}
}

func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	w := &prefixWriter{w: &out, mu: new(sync.Mutex), prefix: "etcd: "}
	fmt.Fprint(w, "one\ntw")
	fmt.Fprint(w, "o\nthree")
	if got, want := out.String(), "etcd: one\netcd: two\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestStartError starts the API server on an address its namespace lacks.
func TestStartError(t *testing.T) {
	bins, ok := Cached(Options{})
	if os.Geteuid() != 0 || !ok {
		t.Skip("needs root and the built binaries (see TestControlPlane)")
	}
	ns := newNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := Start(ctx, Config{Bins: bins, Dir: t.TempDir(), Netns: ns, Addr: netip.MustParseAddr("10.250.0.9")})
	if err == nil || !strings.Contains(err.Error(), "start kube-apiserver: it exited") || !strings.Contains(err.Error(), "10.250.0.9") {
		t.Fatalf("Start on a missing address: %v", err)
	}
	t.Log(err)
}

// TestControlPlane runs the real control plane in a fresh network namespace.
func TestControlPlane(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	bins, ok := Cached(Options{})
	if !ok {
		if os.Getenv("NETLOOM_KUBE_BUILD") != "1" {
			t.Skipf("kube-apiserver %s is not built in %s; set NETLOOM_KUBE_BUILD=1 to build it (about 10 minutes)", KubeVersion, Options{}.cacheDir())
		}
		var err error
		bctx, bcancel := context.WithTimeout(context.Background(), 40*time.Minute)
		defer bcancel()
		t0 := time.Now()
		if bins, err = Build(bctx, Options{Progress: func(s string) { t.Log(s) }}); err != nil {
			t.Fatal(err)
		}
		t.Logf("built in %v", time.Since(t0).Round(time.Second))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns := newNetns(t)

	dir := t.TempDir()
	start := time.Now()
	s, err := Start(ctx, Config{
		Bins:              bins,
		Dir:               dir,
		Netns:             ns,
		Addr:              netip.MustParseAddr("10.250.0.1"),
		ClusterCIDR:       netip.MustParsePrefix("10.244.0.0/16"),
		AllocateNodeCIDRs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		t0 := time.Now()
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
		t.Logf("control plane stopped in %v", time.Since(t0).Round(time.Millisecond))
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
				p := filepath.Join(dir, n+".log")
				t.Logf("last lines of %s:\n%s", p, tail(p, 30))
			}
		}
	})
	t.Logf("control plane ready in %v at %s", time.Since(start).Round(time.Millisecond), s.URL())

	cs, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != KubeVersion {
		t.Errorf("server version %s, want %s", v.GitVersion, KubeVersion)
	}

	const nsName = "devapi-test"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// node IPAM gives a Node a pod CIDR
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "node1 has a pod CIDR", func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !netip.MustParsePrefix("10.244.0.0/16").Contains(netip.MustParsePrefix(orZero(n.Spec.PodCIDR)).Addr()) {
			return fmt.Errorf("podCIDR %q", n.Spec.PodCIDR)
		}
		return nil
	})

	// the endpointslice controller makes a slice for a service, and fills
	// it when a pod (whose kubelet we play) is ready
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}
	if _, err := cs.CoreV1().Services(nsName).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	webSlices := func() ([]discoveryv1.EndpointSlice, error) {
		l, err := cs.DiscoveryV1().EndpointSlices(nsName).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return nil, err
		}
		if len(l.Items) == 0 {
			return nil, fmt.Errorf("no EndpointSlice for service web")
		}
		return l.Items, nil
	}
	eventually(t, ctx, "an EndpointSlice for service web", func() error { _, err := webSlices(); return err })

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName:   "node1",
			Containers: []corev1.Container{{Name: "web", Image: "example.invalid/web", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}},
		},
	}
	eventually(t, ctx, "pod web-1 created (after the default service account)", func() error {
		created, err := cs.CoreV1().Pods(nsName).Create(ctx, pod, metav1.CreateOptions{})
		if err == nil {
			pod = created
		}
		return err
	})
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		PodIP:      "10.244.0.5",
		PodIPs:     []corev1.PodIP{{IP: "10.244.0.5"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	if _, err := cs.CoreV1().Pods(nsName).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "pod web-1 ready in service web's EndpointSlice", func() error {
		items, err := webSlices()
		if err != nil {
			return err
		}
		for _, sl := range items {
			for _, ep := range sl.Endpoints {
				if slices.Contains(ep.Addresses, "10.244.0.5") && ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					return nil
				}
			}
		}
		return fmt.Errorf("slices %+v", items)
	})

	// a service account token authenticates, and RBAC denies it until bound
	tok, err := s.ServiceAccountToken(ctx, nsName, "probe", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	saCfg := s.RESTConfig()
	saCfg.BearerToken = tok
	sa, err := kubernetes.NewForConfig(saCfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.CoreV1().Pods(nsName).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list pods as service account probe: got %v, want 403 Forbidden", err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "probe-view"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: nsName, Name: "probe"}},
	}
	if _, err := cs.RbacV1().RoleBindings(nsName).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "service account probe may list pods", func() error {
		_, err := sa.CoreV1().Pods(nsName).List(ctx, metav1.ListOptions{})
		return err
	})

	// the API server alone goes down and comes back, with its data
	t0 := time.Now()
	if err := s.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server stopped in %v", time.Since(t0).Round(time.Millisecond))
	if _, err := cs.Discovery().ServerVersion(); err == nil {
		t.Error("API server answers after StopAPIServer")
	}
	t0 = time.Now()
	if err := s.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server ready again in %v", time.Since(t0).Round(time.Millisecond))
	if _, err := cs.CoreV1().Services(nsName).Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Errorf("service web after the API server restart: %v", err)
	}

	// the admin kubeconfig names the server and its CA
	kc, err := os.ReadFile(s.AdminKubeconfig())
	if err != nil || !strings.Contains(string(kc), s.URL()) {
		t.Errorf("admin kubeconfig %s: %v\n%s", s.AdminKubeconfig(), err, kc)
	}
}

func orZero(cidr string) string {
	if cidr == "" {
		return "0.0.0.0/0"
	}
	return cidr
}

// newNetns creates a network namespace, removed at the end of the test,
// with lo up and 10.250.0.1 on a dummy interface (or on lo where the kernel
// has no dummy driver).
func newNetns(t *testing.T) string {
	ns := fmt.Sprintf("devapi-%s-%d", strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), os.Getpid())
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip(t, "-n", ns, "link", "set", "lo", "up")
	if exec.Command("ip", "-n", ns, "link", "add", "dummy0", "type", "dummy").Run() == nil {
		ip(t, "-n", ns, "addr", "add", "10.250.0.1/24", "dev", "dummy0")
		ip(t, "-n", ns, "link", "set", "dummy0", "up")
	} else {
		ip(t, "-n", ns, "addr", "add", "10.250.0.1/32", "dev", "lo")
	}
	return ns
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// eventually polls f until it succeeds, failing the test after 60 seconds.
func eventually(t *testing.T, ctx context.Context, what string, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
