package demo

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/netloom/netloom/node/api"
)

// The test binary doubles as a fake netloom when fakeEnv is set: the tests
// drive the package's namespace and process plumbing without the real agent.
const fakeEnv = "NLDEMO_FAKE"

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) == "1" {
		os.Exit(fakeMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeFlags(args []string) map[string]string {
	f := map[string]string{}
	for i := 0; i < len(args); i++ {
		if strings.HasPrefix(args[i], "-") && i+1 < len(args) {
			f[strings.TrimLeft(args[i], "-")] = args[i+1]
			i++
		}
	}
	return f
}

func fakeMain(args []string) int {
	if cmd := os.Getenv("CNI_COMMAND"); cmd != "" {
		return fakeCNI(cmd)
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "fake netloom: no command")
		return 2
	}
	f := fakeFlags(args[1:])
	switch args[0] {
	case "init":
		if err := os.MkdirAll(f["data-dir"], 0o700); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.WriteFile(filepath.Join(f["data-dir"], "secret"), []byte("s3cret"), 0o600)
		fmt.Println("initialized the cluster secret")
		fmt.Println("join token:")
		fmt.Println("FAKETOKEN-123")
		return 0
	case "agent":
		return fakeAgent(args, f)
	case "wg-companion":
		pidFile := filepath.Join(f["run-dir"], f["iface"]+".pid")
		os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Remove(pidFile)
		return 0
	case "status":
		return fakeStatus(f["socket"])
	case "leave":
		conn, err := net.Dial("unix", f["socket"])
		if err != nil {
			fmt.Fprintln(os.Stderr, "not running:", err)
			return 1
		}
		fmt.Fprintln(conn, "leave")
		io.ReadAll(conn)
		return 0
	}
	fmt.Fprintln(os.Stderr, "fake netloom: unknown command", args[0])
	return 2
}

func fakeAgent(args []string, f map[string]string) int {
	run := f["run-dir"]
	b, _ := json.Marshal(args)
	os.WriteFile(filepath.Join(run, "agent.args"), b, 0o600)
	os.Remove(f["socket"])
	ln, err := net.Listen("unix", f["socket"])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.Remove(f["socket"])
	// start a companion unless one runs already (restart adopts it)
	pidFile := filepath.Join(run, f["wg-iface"]+".pid")
	running := false
	if b, err := os.ReadFile(pidFile); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		running = procAlive(pid, 0) && strings.Contains(procCmdline(pid), "wg-companion")
	}
	if !running {
		exe, _ := os.Executable()
		cmd := exec.Command(exe, "wg-companion", "--iface", f["wg-iface"], "--run-dir", run)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cmd.Process.Release()
	}
	fmt.Fprintln(os.Stderr, "fake agent up", f["name"])
	leave := make(chan struct{})
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(conn).ReadString('\n')
			if strings.TrimSpace(line) == "leave" {
				conn.Close()
				close(leave)
				return
			}
			conn.Close()
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		return 0
	case <-leave:
		return 0
	}
}

// fakeCluster reads the state file of the cluster a socket belongs to.
func fakeCluster(socket string) (*Cluster, *Node, error) {
	c, err := Load(filepath.Dir(filepath.Dir(socket)), nil)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range c.Nodes {
		if n.Socket == socket {
			return c, n, nil
		}
	}
	return nil, nil, fmt.Errorf("no node with socket %s", socket)
}

func fakeUp(socket string) bool {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func fakeSubnet(node string) string {
	i, _ := strconv.Atoi(strings.TrimPrefix(node, "node"))
	return fmt.Sprintf("10.244.%d.0/24", i)
}

func fakeStatus(socket string) int {
	if !fakeUp(socket) {
		fmt.Fprintln(os.Stderr, "netloom agent is not running")
		return 1
	}
	c, self, err := fakeCluster(socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st := api.Status{Node: api.NodeStatus{Name: self.Name, Address: self.Addr.String(), Subnet: fakeSubnet(self.Name)}}
	for _, n := range c.Nodes {
		m := api.MemberStatus{Name: n.Name, Address: n.Addr.String(), State: "dead", Subnet: fakeSubnet(n.Name), Self: n == self}
		if fakeUp(n.Socket) {
			m.State = "alive"
		}
		st.Members = append(st.Members, m)
	}
	json.NewEncoder(os.Stdout).Encode(st)
	return 0
}

func fakeCNIError(code int, msg string) int {
	json.NewEncoder(os.Stdout).Encode(map[string]any{"cniVersion": "1.0.0", "code": code, "msg": msg})
	return 1
}

func fakeCNI(cmd string) int {
	var conf struct {
		Socket string `json:"socket"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&conf); err != nil {
		return fakeCNIError(6, "decode netconf: "+err.Error())
	}
	_, node, err := fakeCluster(conf.Socket)
	if err != nil {
		return fakeCNIError(11, err.Error())
	}
	if !inNetns(os.Getpid(), node.NS) {
		return fakeCNIError(11, "plugin not run inside the node namespace "+node.NS)
	}
	if os.Getenv("CNI_IFNAME") != "eth0" || !strings.HasPrefix(os.Getenv("CNI_NETNS"), NetnsDir+"/") {
		return fakeCNIError(4, "bad CNI environment")
	}
	os.WriteFile(filepath.Join(node.RunDir, "cni-"+cmd+"-"+os.Getenv("CNI_CONTAINERID")), []byte(os.Getenv("CNI_ARGS")), 0o600)
	if cmd != "ADD" {
		return 0
	}
	if !fakeUp(conf.Socket) {
		return fakeCNIError(11, "netloom agent is not running")
	}
	var pod string
	for _, kv := range strings.Split(os.Getenv("CNI_ARGS"), ";") {
		if v, ok := strings.CutPrefix(kv, "K8S_POD_NAME="); ok {
			pod = v
		}
	}
	if strings.Contains(pod, "fail") {
		return fakeCNIError(7, "fake failure for "+pod)
	}
	_, idx, _ := strings.Cut(pod, "-p")
	host, _ := strconv.Atoi(idx)
	n, _ := strconv.Atoi(strings.TrimPrefix(node.Name, "node"))
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"cniVersion": "1.0.0",
		"ips":        []map[string]string{{"address": fmt.Sprintf("10.244.%d.%d/24", n, host+1), "gateway": fmt.Sprintf("10.244.%d.1", n)}},
	})
	return 0
}
