package devapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"time"
)

// pki is what the control plane needs to authenticate: a CA, the API
// server's serving certificate, and the service-account signing key pair.
// All PEM encoded.
type pki struct {
	CACert, CAKey           []byte
	ServingCert, ServingKey []byte
	SAKey, SAPub            []byte
}

// servingDNSNames are the names the API server's certificate carries
// besides its addresses: the in-cluster names of the kubernetes service.
var servingDNSNames = []string{
	"localhost",
	"kubernetes",
	"kubernetes.default",
	"kubernetes.default.svc",
	"kubernetes.default.svc.cluster.local",
}

// servingIPs are the addresses the API server's certificate carries: the
// listen address, loopback, and the kubernetes service's cluster IP (the
// first address of the service range).
func servingIPs(addr netip.Addr, serviceCIDR netip.Prefix) []netip.Addr {
	ips := []netip.Addr{addr, netip.MustParseAddr("127.0.0.1"), serviceCIDR.Masked().Addr().Next()}
	out := ips[:0]
	for _, ip := range ips {
		if ip.IsValid() && !containsAddr(out, ip) {
			out = append(out, ip)
		}
	}
	return out
}

func containsAddr(l []netip.Addr, a netip.Addr) bool {
	for _, x := range l {
		if x == a {
			return true
		}
	}
	return false
}

// newPKI generates a CA (valid ten years), a serving certificate for the
// API server signed by it, and a service-account key pair, all ECDSA P-256.
func newPKI(addr netip.Addr, serviceCIDR netip.Prefix) (*pki, error) {
	now := time.Now().Add(-time.Hour) // tolerate small clock skew
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "netloom-dev-ca"},
		NotBefore:             now,
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     servingDNSNames,
	}
	for _, ip := range servingIPs(addr, serviceCIDR) {
		srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, srvKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("create serving certificate: %w", err)
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}

	p := &pki{
		CACert:      pemBlock("CERTIFICATE", caDER),
		ServingCert: pemBlock("CERTIFICATE", srvDER),
		SAPub:       pemBlock("PUBLIC KEY", saPub),
	}
	for _, k := range []struct {
		key *ecdsa.PrivateKey
		out *[]byte
	}{{caKey, &p.CAKey}, {srvKey, &p.ServingKey}, {saKey, &p.SAKey}} {
		der, err := x509.MarshalPKCS8PrivateKey(k.key)
		if err != nil {
			return nil, err
		}
		*k.out = pemBlock("PRIVATE KEY", der)
	}
	return p, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// newToken returns a random bearer token (32 hex digits).
func newToken() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// tokenUser is one line of kube-apiserver's --token-auth-file.
type tokenUser struct {
	Token, User, UID string
	Groups           []string
}

// tokenFile renders the static token file: token,user,uid,"group1,group2".
func tokenFile(users []tokenUser) string {
	var b strings.Builder
	for _, u := range users {
		fmt.Fprintf(&b, "%s,%s,%s", u.Token, u.User, u.UID)
		if len(u.Groups) > 0 {
			fmt.Fprintf(&b, ",%q", strings.Join(u.Groups, ","))
		}
		b.WriteByte('\n')
	}
	return b.String()
}
