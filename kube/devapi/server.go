package devapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netloom/netloom/kube"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// Config says how Start runs the control plane.
type Config struct {
	// Bins are the programs, from Build.
	Bins Binaries
	// Dir holds the state: certificates, keys, tokens.csv, kubeconfigs,
	// etcd data (Dir/etcd) and one log per process (Dir/<name>.log). It is
	// created when missing; certificates and tokens are new on every Start.
	Dir string
	// Netns is the name of the network namespace (as in `ip netns`) every
	// process runs in; empty means the caller's.
	Netns string
	// Addr is the address the API server listens on and advertises; it must
	// exist in Netns. Default 127.0.0.1.
	Addr netip.Addr
	// Port is the API server's secure port. Default 6443.
	Port int
	// ServiceCIDR is the service cluster IP range. Default 10.96.0.0/16.
	ServiceCIDR netip.Prefix
	// ClusterCIDR is the pod range node subnets are cut from; required when
	// AllocateNodeCIDRs is set.
	ClusterCIDR netip.Prefix
	// AllocateNodeCIDRs runs kube-controller-manager's node IPAM, which sets
	// spec.podCIDR of every Node.
	AllocateNodeCIDRs bool
	// NodeCIDRMaskSize is the prefix length of a node's subnet; 0 means the
	// controller's default (24 for IPv4, 64 for IPv6).
	NodeCIDRMaskSize int
	// Log, when set, also receives every process's output, each line
	// prefixed with the process's name.
	Log io.Writer
}

// Controllers are the kube-controller-manager controllers Start runs: those
// a network needs that work without kubelets. NodeIPAMController is added
// when Config.AllocateNodeCIDRs is set.
var Controllers = []string{
	"serviceaccount-controller",
	"namespace-controller",
	"endpointslice-controller",
	"endpointslice-mirroring-controller",
	"garbage-collector-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller", // fills admin, edit, view
}

// NodeIPAMController is the controller that allocates node pod CIDRs.
const NodeIPAMController = "node-ipam-controller"

// Server is a running control plane.
type Server struct {
	cfg        Config
	pki        *pki
	adminToken string
	etcdURL    string
	http       *http.Client
	logMu      sync.Mutex // serialises writes to cfg.Log

	mu            sync.Mutex
	etcd, api, cm *proc
}

// proc is one started process.
type proc struct {
	name, logPath string
	cmd           *exec.Cmd
	done          chan struct{} // closed when the process has exited
	err           error         // from Wait; read after done
}

// Start runs etcd, kube-apiserver and kube-controller-manager and returns
// when the API server is ready and the controller manager has created the
// default service account. ctx bounds only the start; Stop ends the
// processes. On error every process already started is stopped.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start kube-apiserver: create state dir: %w", err)
	}
	if cfg.Netns != "" {
		if _, err := exec.LookPath("ip"); err != nil {
			return nil, fmt.Errorf("start kube-apiserver in netns %s: the ip command (iproute2) is not in PATH; install iproute2", cfg.Netns)
		}
	}
	p, err := newPKI(cfg.Addr, cfg.ServiceCIDR)
	if err != nil {
		return nil, fmt.Errorf("start kube-apiserver: generate certificates: %w", err)
	}
	s := &Server{cfg: cfg, pki: p, adminToken: newToken()}
	cmToken := newToken()
	files := map[string][]byte{
		"ca.crt":           p.CACert,
		"ca.key":           p.CAKey,
		"apiserver.crt":    p.ServingCert,
		"apiserver.key":    p.ServingKey,
		"sa.key":           p.SAKey,
		"sa.pub":           p.SAPub,
		"tokens.csv":       []byte(tokenFile(s.tokenUsers(cmToken))),
		"admin.kubeconfig": []byte(s.kubeconfig("admin", s.adminToken)),
		// The controllers run with the controller manager's own
		// credentials (--use-service-account-credentials=false), so it is
		// in system:masters; see tokenUsers.
		"kube-controller-manager.kubeconfig": []byte(s.kubeconfig("system:kube-controller-manager", cmToken)),
	}
	for name, data := range files {
		if err := os.WriteFile(s.path(name), data, 0o600); err != nil {
			return nil, fmt.Errorf("start kube-apiserver: %w", err)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.CACert)
	s.http = &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:     dialer(cfg.Netns),
			TLSClientConfig: &tls.Config{RootCAs: pool},
		},
	}

	ports, err := freePorts(cfg.Netns, 2)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	s.etcdURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	if err := s.startEtcd(ctx, ports[1]); err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.StartAPIServer(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.startControllerManager(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (c *Config) setDefaults() error {
	if c.Bins.APIServer == "" || c.Bins.ControllerManager == "" || c.Bins.Etcd == "" {
		return errors.New("start kube-apiserver: Config.Bins is empty; get the binaries from devapi.Build")
	}
	if c.Dir == "" {
		return errors.New("start kube-apiserver: Config.Dir (the state directory) is empty")
	}
	if !c.Addr.IsValid() {
		c.Addr = netip.MustParseAddr("127.0.0.1")
	}
	if c.Port == 0 {
		c.Port = 6443
	}
	if !c.ServiceCIDR.IsValid() {
		c.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	}
	if c.AllocateNodeCIDRs && !c.ClusterCIDR.IsValid() {
		return errors.New("start kube-controller-manager: AllocateNodeCIDRs needs Config.ClusterCIDR (e.g. 10.244.0.0/16)")
	}
	return nil
}

// tokenUsers are the static tokens: the admin, and the controller manager.
// The controller manager is also in system:masters: its bootstrap role
// (system:kube-controller-manager) lets it only read, and with
// --use-service-account-credentials=false every controller uses its token.
func (s *Server) tokenUsers(cmToken string) []tokenUser {
	return []tokenUser{
		{Token: s.adminToken, User: "admin", UID: "admin", Groups: []string{"system:masters"}},
		{Token: cmToken, User: "system:kube-controller-manager", UID: "system:kube-controller-manager", Groups: []string{"system:masters"}},
	}
}

func (s *Server) path(name string) string { return filepath.Join(s.cfg.Dir, name) }

// URL is the API server's address, https://Addr:Port.
func (s *Server) URL() string {
	return "https://" + net.JoinHostPort(s.cfg.Addr.String(), strconv.Itoa(s.cfg.Port))
}

// CACert is the PEM of the CA that signed the API server's certificate.
func (s *Server) CACert() []byte { return s.pki.CACert }

// AdminToken is the bearer token of user "admin" (group system:masters).
func (s *Server) AdminToken() string { return s.adminToken }

// AdminKubeconfig is the path of a kubeconfig for the admin.
func (s *Server) AdminKubeconfig() string { return s.path("admin.kubeconfig") }

// Netns is the network namespace the control plane runs in ("" = the
// caller's).
func (s *Server) Netns() string { return s.cfg.Netns }

// RESTConfig returns a client config for the admin. When the server runs in
// a network namespace, its connections are made from inside it, so it works
// from a process in any namespace. Set BearerToken on the copy to act as
// someone else.
func (s *Server) RESTConfig() *rest.Config {
	c := &rest.Config{
		Host:            s.URL(),
		BearerToken:     s.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.pki.CACert},
		QPS:             50,
		Burst:           100,
	}
	if s.cfg.Netns != "" {
		c.Dial = dialer(s.cfg.Netns)
	}
	return c
}

// WriteKubeconfig writes a kubeconfig for a bearer token at path: the CA,
// the server at URL, and user with token.
func (s *Server) WriteKubeconfig(path, user, token string) error {
	if err := os.WriteFile(path, []byte(s.kubeconfig(user, token)), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

func (s *Server) kubeconfig(user, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: netloom-dev
  cluster:
    server: %q
    certificate-authority-data: %s
users:
- name: %q
  user:
    token: %q
contexts:
- name: netloom-dev
  context:
    cluster: netloom-dev
    user: %q
current-context: netloom-dev
`, s.URL(), base64.StdEncoding.EncodeToString(s.pki.CACert), user, token, user)
}

// ServiceAccountToken returns a token for service account namespace/name
// from the TokenRequest API, creating the service account if it is
// missing. The API server raises a ttl below 10 minutes to 10 minutes.
func (s *Server) ServiceAccountToken(ctx context.Context, namespace, name string, ttl time.Duration) (string, error) {
	cs, err := kube.NewAPI(s.RESTConfig())
	if err != nil {
		return "", fmt.Errorf("service account token %s/%s: %w", namespace, name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := cs.Create(ctx, kube.Ref{Resource: "serviceaccounts", Namespace: namespace}, sa, nil); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("service account token %s/%s: create service account: %w", namespace, name, err)
	}
	secs := int64(max(ttl, 10*time.Minute) / time.Second)
	tr := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}}
	if err := cs.Create(ctx, kube.Ref{Resource: "serviceaccounts", Namespace: namespace, Name: name, Subresource: "token"}, tr, tr); err != nil {
		return "", fmt.Errorf("service account token %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

func (s *Server) startEtcd(ctx context.Context, peerPort int) error {
	p, err := s.start("etcd", s.cfg.Bins.Etcd,
		"--data-dir", s.path("etcd"),
		"--listen-client-urls", s.etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--unsafe-no-fsync")
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.etcd = p
	s.mu.Unlock()
	return s.waitFor(ctx, p, "healthy", func(ctx context.Context) error {
		return s.get(ctx, s.etcdURL+"/health", "")
	})
}

// apiServerArgs are kube-apiserver's flags.
func (s *Server) apiServerArgs() []string {
	return []string{
		"--etcd-servers=" + s.etcdURL,
		"--bind-address=" + s.cfg.Addr.String(),
		"--advertise-address=" + s.cfg.Addr.String(),
		"--secure-port=" + strconv.Itoa(s.cfg.Port),
		"--cert-dir=" + s.path("apiserver-certs"),
		"--tls-cert-file=" + s.path("apiserver.crt"),
		"--tls-private-key-file=" + s.path("apiserver.key"),
		"--client-ca-file=" + s.path("ca.crt"),
		"--token-auth-file=" + s.path("tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + s.path("sa.pub"),
		"--service-account-signing-key-file=" + s.path("sa.key"),
		"--service-cluster-ip-range=" + s.cfg.ServiceCIDR.Masked().String(),
		"--allow-privileged=true",
		"--profiling=false",
		// close watches on SIGTERM; without it the server waits for them
		// for up to --request-timeout (a minute)
		"--shutdown-watch-termination-grace-period=2s",
	}
}

// StartAPIServer starts kube-apiserver (after StopAPIServer, or from Start)
// and waits until /readyz answers ok.
func (s *Server) StartAPIServer(ctx context.Context) error {
	s.mu.Lock()
	running := s.api != nil && !exited(s.api)
	s.mu.Unlock()
	if running {
		return errors.New("start kube-apiserver: it is already running")
	}
	p, err := s.start("kube-apiserver", s.cfg.Bins.APIServer, s.apiServerArgs()...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.api = p
	s.mu.Unlock()
	return s.waitFor(ctx, p, "ready", func(ctx context.Context) error {
		return s.get(ctx, s.URL()+"/readyz", s.adminToken)
	})
}

// StopAPIServer stops kube-apiserver alone (SIGTERM, then SIGKILL after 15
// seconds); etcd and the controller manager keep running.
func (s *Server) StopAPIServer() error {
	s.mu.Lock()
	p := s.api
	s.mu.Unlock()
	return stop(p)
}

func (s *Server) startControllerManager(ctx context.Context) error {
	controllers := Controllers
	if s.cfg.AllocateNodeCIDRs {
		controllers = append(controllers[:len(controllers):len(controllers)], NodeIPAMController)
	}
	args := []string{
		"--kubeconfig=" + s.path("kube-controller-manager.kubeconfig"),
		"--controllers=" + strings.Join(controllers, ","),
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--secure-port=0",
		"--root-ca-file=" + s.path("ca.crt"),
		"--service-cluster-ip-range=" + s.cfg.ServiceCIDR.Masked().String(),
		// Benchmarks create thousands of services; the default 20 requests
		// a second would take minutes to write their EndpointSlices.
		"--kube-api-qps=500", "--kube-api-burst=1000",
	}
	if s.cfg.AllocateNodeCIDRs {
		args = append(args, "--allocate-node-cidrs=true", "--cluster-cidr="+s.cfg.ClusterCIDR.Masked().String())
		if s.cfg.NodeCIDRMaskSize != 0 {
			args = append(args, "--node-cidr-mask-size="+strconv.Itoa(s.cfg.NodeCIDRMaskSize))
		}
	}
	p, err := s.start("kube-controller-manager", s.cfg.Bins.ControllerManager, args...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cm = p
	s.mu.Unlock()
	// The service account controller creating default/default shows the
	// controller manager is up and allowed to write.
	return s.waitFor(ctx, p, "running (service account default/default)", func(ctx context.Context) error {
		return s.get(ctx, s.URL()+"/api/v1/namespaces/default/serviceaccounts/default", s.adminToken)
	})
}

// Stop ends the controller manager, the API server and etcd, in that
// order: SIGTERM to each process, SIGKILL after 15 seconds.
func (s *Server) Stop() error {
	s.mu.Lock()
	procs := []*proc{s.cm, s.api, s.etcd}
	s.mu.Unlock()
	var errs []error
	for _, p := range procs {
		errs = append(errs, stop(p))
	}
	if s.http != nil {
		s.http.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

// start starts bin with args, in the netns when one is set, with its output
// appended to Dir/<name>.log (and copied to Config.Log).
func (s *Server) start(name, bin string, args ...string) (*proc, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("start %s: %w; run devapi.Build first", name, err)
	}
	logPath := s.path(name + ".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	fmt.Fprintf(logf, "--- %s %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	var cmd *exec.Cmd
	if s.cfg.Netns != "" {
		// ip netns exec execs the program: the PID is the program's own.
		cmd = exec.Command("ip", append([]string{"netns", "exec", s.cfg.Netns, bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Dir = s.cfg.Dir
	var out io.Writer = logf
	if s.cfg.Log != nil {
		out = io.MultiWriter(logf, &prefixWriter{w: s.cfg.Log, mu: &s.logMu, prefix: name + ": "})
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group: a terminal's ^C reaches us, and we stop them in
	// order. Pdeathsig: they do not outlive a test binary that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func exited(p *proc) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to p's process and SIGKILL 15 seconds later if it is
// still running, and waits for it to exit.
func stop(p *proc) error {
	if p == nil || exited(p) {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !exited(p) {
		return fmt.Errorf("stop %s (pid %d): %w", p.name, p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(15 * time.Second):
	}
	p.cmd.Process.Kill()
	<-p.done
	return nil
}

// waitFor polls check until it succeeds, p exits, ctx ends or two minutes
// pass. Errors carry the last lines of p's log.
func (s *Server) waitFor(ctx context.Context, p *proc, state string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("start %s: it exited before it was %s (%v); last lines of %s:\n%s", p.name, state, p.err, p.logPath, tail(p.logPath, 20))
		case <-ctx.Done():
			return fmt.Errorf("start %s: not %s in time (%v); last lines of %s:\n%s", p.name, state, last, p.logPath, tail(p.logPath, 20))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// get succeeds when url answers 200 OK.
func (s *Server) get(ctx context.Context, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// prefixWriter writes whole lines to w, each starting with prefix.
type prefixWriter struct {
	w      io.Writer
	mu     *sync.Mutex // shared by the writers of one w
	prefix string
	buf    []byte
}

func (pw *prefixWriter) Write(b []byte) (int, error) {
	pw.buf = append(pw.buf, b...)
	for {
		i := bytes.IndexByte(pw.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		pw.mu.Lock()
		_, err := fmt.Fprintf(pw.w, "%s%s\n", pw.prefix, pw.buf[:i])
		pw.mu.Unlock()
		pw.buf = pw.buf[i+1:]
		if err != nil {
			return len(b), err
		}
	}
}
