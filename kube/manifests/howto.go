package manifests

import (
	"strings"
)

// KubeconfigPath is where the agent's kubeconfig goes on every host.
const KubeconfigPath = "/etc/netloom/kubeconfig"

// TokenDuration is the lifetime KubeconfigHowTo asks for: a year. The API
// server caps it at its --service-account-max-token-expiration.
const TokenDuration = "8760h"

// KubeconfigHowTo is the text `netloom install` and `netloom k8s kubeconfig`
// print: how a cluster admin applies the manifests and makes the kubeconfig
// of ServiceAccount kube-system/netloom for the agents. server is the API
// server's URL as the hosts reach it; empty means take it from the admin's
// own kubeconfig. The commands start at column 0 so that they can be
// pasted into a shell as they are.
func KubeconfigHowTo(server string) string {
	serverLine := "SERVER=" + shellQuote(server)
	if server == "" {
		serverLine = "SERVER=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
	}
	r := strings.NewReplacer(
		"{server}", serverLine,
		"{sa}", ServiceAccountName,
		"{ns}", ServiceAccountNamespace,
		"{duration}", TokenDuration,
		"{path}", KubeconfigPath,
		"{pools}", AddressPoolCRDName,
	)
	return r.Replace(`in Kubernetes mode the agents run on the hosts (not in pods) and use the
ServiceAccount {ns}/{sa}. Once per cluster, with kubectl as cluster admin,
create it, its ClusterRole and binding, and the AddressPool CRD:

netloom k8s manifests | kubectl apply -f -

then make a kubeconfig for it (SERVER must be an address every host
reaches, not 127.0.0.1):

{server}
CA=$(kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
TOKEN=$(kubectl create token {sa} -n {ns} --duration={duration})
(umask 077 && cat > kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: $SERVER
    certificate-authority-data: $CA
users:
- name: {sa}
  user:
    token: $TOKEN
contexts:
- name: {sa}
  context:
    cluster: kubernetes
    user: {sa}
current-context: {sa}
EOF
)

copy it to every host as {path}, owned by root, mode 0600:

install -D -o root -g root -m 0600 kubeconfig {path}

and start the agent with it, by one of:

  netloom agent --kubeconfig {path}
  NETLOOM_KUBECONFIG={path}     in /etc/netloom/netloom.env (the unit reads it)
  kubeconfig: {path}            in the agent's --config file

check it on a host: kubectl --kubeconfig {path} get {pools}

the token comes from the TokenRequest API, and the API server caps
--duration at its --service-account-max-token-expiration, so it may expire
sooner than asked. Before it does, make a new one, replace the file on every
host and restart netloom. (With the token in a file of its own, named by
tokenFile: instead of token:, replacing that file is enough: the agent
rereads it every minute.)
`)
}

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@%+=,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
