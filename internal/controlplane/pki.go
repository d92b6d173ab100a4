package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// clockSkew back-dates NotBefore so that certificates are valid at once
	// even if clocks of the involved processes disagree slightly.
	clockSkew = time.Hour
)

// authority is an in-memory certificate authority that signs leaf
// certificates. It is safe for concurrent use: its fields are never written
// after newAuthority returns.
type authority struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// certRequest describes a leaf certificate.
type certRequest struct {
	commonName string
	orgs       []string
	dnsNames   []string
	ips        []net.IP
	usages     []x509.ExtKeyUsage
}

func newAuthority(commonName string) (*authority, error) {
	key, keyPEM, err := newECKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-signing ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing ca certificate: %w", err)
	}
	return &authority{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  keyPEM,
	}, nil
}

// issue signs a new certificate for req with a fresh ECDSA P-256 key and
// returns both PEM encoded.
func (a *authority) issue(req certRequest) (certPEM, keyPEM []byte, err error) {
	key, keyPEM, err := newECKey()
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.commonName, Organization: req.orgs},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  req.usages,
		DNSNames:     req.dnsNames,
		IPAddresses:  req.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing certificate for %q: %w", req.commonName, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// clientCert issues a client certificate for user name in groups.
func (a *authority) clientCert(name string, groups ...string) (certPEM, keyPEM []byte, err error) {
	return a.issue(certRequest{
		commonName: name,
		orgs:       groups,
		usages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// servingCert issues a server certificate. Hosts that parse as IP
// addresses become IP SANs, the rest DNS SANs.
func (a *authority) servingCert(commonName string, hosts ...string) (certPEM, keyPEM []byte, err error) {
	req := certRequest{
		commonName: commonName,
		usages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			req.ips = append(req.ips, ip)
		} else {
			req.dnsNames = append(req.dnsNames, h)
		}
	}
	return a.issue(req)
}

func newECKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ecdsa key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding ecdsa key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// newServiceAccountKey returns a PEM-encoded RSA key for signing and
// verifying service-account tokens.
func newServiceAccountKey() ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating service-account key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return serial, nil
}

// pkiFiles are the paths of the key material that the control-plane
// processes read. All live in <Dir>/pki.
type pkiFiles struct {
	caCert, caKey                             string
	apiserverCert, apiserverKey               string
	kubeletClientCert, kubeletClientKey       string
	controllerManagerCert, controllerKey      string
	schedulerCert, schedulerKey               string
	serviceAccountKey                         string
	frontProxyCACert                          string
	frontProxyClientCert, frontProxyClientKey string
	kubeletClientCertPEM, kubeletClientKeyPEM []byte
}

// frontProxyClientName is the CN of the certificate the API server
// presents to aggregated API servers.
const frontProxyClientName = "front-proxy-client"

// servingHosts are the names every serving certificate is valid for.
var servingHosts = []string{"127.0.0.1", "localhost"}

// apiserverHosts are the names the API server's certificate is valid for,
// including the in-cluster service names and the service IP of
// 10.96.0.0/16.
var apiserverHosts = []string{
	"127.0.0.1", "localhost", "10.96.0.1",
	"kubernetes", "kubernetes.default", "kubernetes.default.svc",
	"kubernetes.default.svc.cluster.local",
}

// writePKI generates the cluster CA and every certificate and key the
// control plane needs into dir.
func writePKI(dir string) (*authority, *pkiFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating pki dir: %w", err)
	}
	ca, err := newAuthority("vk-fleet-ca")
	if err != nil {
		return nil, nil, err
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	f := &pkiFiles{
		caCert: p("ca.crt"), caKey: p("ca.key"),
		apiserverCert: p("apiserver.crt"), apiserverKey: p("apiserver.key"),
		kubeletClientCert: p("apiserver-kubelet-client.crt"), kubeletClientKey: p("apiserver-kubelet-client.key"),
		controllerManagerCert: p("kube-controller-manager.crt"), controllerKey: p("kube-controller-manager.key"),
		schedulerCert: p("kube-scheduler.crt"), schedulerKey: p("kube-scheduler.key"),
		serviceAccountKey:    p("sa.key"),
		frontProxyCACert:     p("front-proxy-ca.crt"),
		frontProxyClientCert: p("front-proxy-client.crt"), frontProxyClientKey: p("front-proxy-client.key"),
	}
	if err := writePair(f.caCert, ca.certPEM, f.caKey, ca.keyPEM); err != nil {
		return nil, nil, err
	}

	type pair struct {
		certPath, keyPath string
		issue             func() ([]byte, []byte, error)
	}
	pairs := []pair{
		{f.apiserverCert, f.apiserverKey, func() ([]byte, []byte, error) {
			return ca.servingCert("kube-apiserver", apiserverHosts...)
		}},
		{f.kubeletClientCert, f.kubeletClientKey, func() ([]byte, []byte, error) {
			return ca.clientCert("kube-apiserver-kubelet-client", "system:masters")
		}},
		{f.controllerManagerCert, f.controllerKey, func() ([]byte, []byte, error) {
			return ca.servingCert("kube-controller-manager", servingHosts...)
		}},
		{f.schedulerCert, f.schedulerKey, func() ([]byte, []byte, error) {
			return ca.servingCert("kube-scheduler", servingHosts...)
		}},
	}
	for _, pr := range pairs {
		certPEM, keyPEM, err := pr.issue()
		if err != nil {
			return nil, nil, err
		}
		if err := writePair(pr.certPath, certPEM, pr.keyPath, keyPEM); err != nil {
			return nil, nil, err
		}
		if pr.certPath == f.kubeletClientCert {
			f.kubeletClientCertPEM, f.kubeletClientKeyPEM = certPEM, keyPEM
		}
	}

	// The aggregation layer's CA. Without it the extension-apiserver-
	// authentication ConfigMap lacks a request-header CA and the
	// controller manager and scheduler log errors about it in a loop.
	frontProxy, err := newAuthority("vk-fleet-front-proxy-ca")
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(f.frontProxyCACert, frontProxy.certPEM, 0o644); err != nil {
		return nil, nil, fmt.Errorf("writing front-proxy ca: %w", err)
	}
	certPEM, keyPEM, err := frontProxy.clientCert(frontProxyClientName)
	if err != nil {
		return nil, nil, err
	}
	if err := writePair(f.frontProxyClientCert, certPEM, f.frontProxyClientKey, keyPEM); err != nil {
		return nil, nil, err
	}

	saKey, err := newServiceAccountKey()
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(f.serviceAccountKey, saKey, 0o600); err != nil {
		return nil, nil, fmt.Errorf("writing service-account key: %w", err)
	}
	return ca, f, nil
}

func writePair(certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("writing certificate: %w", err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("writing key: %w", err)
	}
	return nil
}
