package controlplane

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vk-fleet/vk-fleet/internal/pki"
)

// newServiceAccountKey returns a PEM-encoded RSA key for signing and
// verifying service-account tokens.
func newServiceAccountKey() ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating service-account key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), nil
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
func writePKI(dir string) (*pki.Authority, *pkiFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating pki dir: %w", err)
	}
	ca, err := pki.NewAuthority("vk-fleet-ca")
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
	if err := writePair(f.caCert, ca.CertPEM, f.caKey, ca.KeyPEM); err != nil {
		return nil, nil, err
	}

	type pair struct {
		certPath, keyPath string
		issue             func() ([]byte, []byte, error)
	}
	pairs := []pair{
		{f.apiserverCert, f.apiserverKey, func() ([]byte, []byte, error) {
			return ca.ServingCert("kube-apiserver", apiserverHosts...)
		}},
		{f.kubeletClientCert, f.kubeletClientKey, func() ([]byte, []byte, error) {
			return ca.ClientCert("kube-apiserver-kubelet-client", "system:masters")
		}},
		{f.controllerManagerCert, f.controllerKey, func() ([]byte, []byte, error) {
			return ca.ServingCert("kube-controller-manager", servingHosts...)
		}},
		{f.schedulerCert, f.schedulerKey, func() ([]byte, []byte, error) {
			return ca.ServingCert("kube-scheduler", servingHosts...)
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
	frontProxy, err := pki.NewAuthority("vk-fleet-front-proxy-ca")
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(f.frontProxyCACert, frontProxy.CertPEM, 0o644); err != nil {
		return nil, nil, fmt.Errorf("writing front-proxy ca: %w", err)
	}
	certPEM, keyPEM, err := frontProxy.ClientCert(frontProxyClientName)
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
