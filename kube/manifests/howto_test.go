package manifests

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/tools/clientcmd"
)

func TestKubeconfigHowToGolden(t *testing.T) {
	golden(t, "kubeconfig-howto.txt", []byte(KubeconfigHowTo("")))
	golden(t, "kubeconfig-howto-server.txt", []byte(KubeconfigHowTo("https://192.168.1.10:6443")))
}

func TestKubeconfigHowToCommands(t *testing.T) {
	text := KubeconfigHowTo("https://[2001:db8::1]:6443")
	for _, want := range []string{
		"netloom k8s manifests | kubectl apply -f -",
		"kubectl create token netloom -n kube-system --duration=8760h",
		"--service-account-max-token-expiration",
		"kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}'",
		"SERVER='https://[2001:db8::1]:6443'",
		"(umask 077 && cat > kubeconfig <<EOF",
		"install -D -o root -g root -m 0600 kubeconfig /etc/netloom/kubeconfig",
		"netloom agent --kubeconfig /etc/netloom/kubeconfig",
		"NETLOOM_KUBECONFIG=/etc/netloom/kubeconfig",
		"kubeconfig: /etc/netloom/kubeconfig",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("how-to lacks %q:\n%s", want, text)
		}
	}
	if got := KubeconfigHowTo(""); !strings.Contains(got, "SERVER=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')") {
		t.Errorf("how-to without a server does not read it from kubectl:\n%s", got)
	}
}

// The commands, run by sh with a stand-in kubectl, write a kubeconfig of
// mode 0600 that client-go loads: the server, the CA and the
// ServiceAccount's token.
func TestKubeconfigHowToScript(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, server := range []string{"", "https://[2001:db8::1]:6443"} {
		text := KubeconfigHowTo(server)
		script := regexp.MustCompile(`(?s)\nSERVER=.*?\nEOF\n\)\n`).FindString(text)
		if script == "" {
			t.Fatalf("no script from SERVER= to the heredoc's end in:\n%s", text)
		}
		dir := t.TempDir()
		bin := filepath.Join(dir, "bin")
		if err := os.Mkdir(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		const ca = "-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"
		kubectl := "#!/bin/sh\n" +
			"case \"$*\" in\n" +
			"\"config view --minify -o jsonpath={.clusters[0].cluster.server}\") printf %s https://10.0.0.1:6443 ;;\n" +
			"\"config view --raw --minify --flatten -o jsonpath={.clusters[0].cluster.certificate-authority-data}\") printf %s " +
			base64.StdEncoding.EncodeToString([]byte(ca)) + " ;;\n" +
			"\"create token netloom -n kube-system --duration=8760h\") printf %s tok.en.sig ;;\n" +
			"*) echo \"kubectl: unexpected arguments: $*\" >&2; exit 1 ;;\n" +
			"esac\n"
		if err := os.WriteFile(filepath.Join(bin, "kubectl"), []byte(kubectl), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sh, "-e", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("script: %v\n%s\n%s", err, out, script)
		}
		path := filepath.Join(dir, "kubeconfig")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("kubeconfig has mode %v, want 0600", fi.Mode().Perm())
		}
		cfg, err := clientcmd.LoadFromFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rest, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
		if err != nil {
			t.Fatalf("client config: %v", err)
		}
		wantServer := server
		if server == "" {
			wantServer = "https://10.0.0.1:6443"
		}
		got := []string{rest.Host, string(rest.CAData), rest.BearerToken}
		want := []string{wantServer, ca, "tok.en.sig"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("server %q: host, CA, token (-want +got):\n%s", server, diff)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"https://192.168.1.10:6443": "https://192.168.1.10:6443",
		"https://[::1]:6443":        "'https://[::1]:6443'",
		"it's":                      `'it'\''s'`,
		"a b":                       "'a b'",
		"$HOME":                     "'$HOME'",
		"":                          "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
