// Package pki is vk-fleet's certificate authority: it creates a CA or loads
// one from PEM, and issues serving and client certificates from it. The
// vk-fleet process uses it for its NATS server, the test control plane for
// every certificate of the cluster.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

const (
	// CAValidity is how long a new CA is valid.
	CAValidity = 10 * 365 * 24 * time.Hour
	// LeafValidity is how long an issued certificate is valid.
	LeafValidity = 365 * 24 * time.Hour
	// clockSkew back-dates NotBefore so that certificates are valid at once
	// even if clocks of the involved processes disagree slightly.
	clockSkew = time.Hour
)

// Authority signs certificates. It is safe for concurrent use: its fields
// are never written after NewAuthority or LoadAuthority returns.
type Authority struct {
	cert *x509.Certificate
	key  crypto.Signer
	// CertPEM and KeyPEM are the CA's certificate and private key.
	CertPEM, KeyPEM []byte
}

// Request describes a certificate to issue.
type Request struct {
	CommonName    string
	Organizations []string
	// Hosts become IP SANs when they parse as IP addresses, else DNS SANs.
	Hosts  []string
	Usages []x509.ExtKeyUsage
}

// NewAuthority creates a self-signed CA named commonName with a fresh
// ECDSA P-256 key.
func NewAuthority(commonName string) (*Authority, error) {
	key, keyPEM, err := NewKey()
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
		NotAfter:              now.Add(CAValidity),
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
	return &Authority{cert: cert, key: key, CertPEM: encodePEM("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// LoadAuthority returns the CA whose certificate and key are certPEM and
// keyPEM.
func LoadAuthority(certPEM, keyPEM []byte) (*Authority, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading ca: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parsing ca certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("loading ca: the certificate is not a CA")
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("loading ca: the key cannot sign")
	}
	return &Authority{cert: cert, key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// Certificate returns the CA's certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// Issue signs a new certificate for req with a fresh ECDSA P-256 key and
// returns both PEM encoded.
func (a *Authority) Issue(req Request) (certPEM, keyPEM []byte, err error) {
	key, keyPEM, err := NewKey()
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
		Subject:      pkix.Name{CommonName: req.CommonName, Organization: req.Organizations},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(LeafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  req.Usages,
	}
	for _, h := range req.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing certificate for %q: %w", req.CommonName, err)
	}
	return encodePEM("CERTIFICATE", der), keyPEM, nil
}

// ClientCert issues a client certificate for user name in groups.
func (a *Authority) ClientCert(name string, groups ...string) (certPEM, keyPEM []byte, err error) {
	return a.Issue(Request{CommonName: name, Organizations: groups, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// ServingCert issues a server certificate for hosts.
func (a *Authority) ServingCert(commonName string, hosts ...string) (certPEM, keyPEM []byte, err error) {
	return a.Issue(Request{CommonName: commonName, Hosts: hosts, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
}

// ServerTLS issues a serving certificate for hosts and returns a TLS
// configuration that serves it.
func (a *Authority) ServerTLS(commonName string, hosts ...string) (*tls.Config, error) {
	certPEM, keyPEM, err := a.ServingCert(commonName, hosts...)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading issued certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// ServerTLSFromFiles loads a serving certificate and its key.
func ServerTLSFromFiles(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading server certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Pool returns a pool holding the CA certificates in the PEM file path.
func Pool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, errors.New("CA file holds no PEM certificate")
	}
	return p, nil
}

// NewKey returns a fresh ECDSA P-256 key and its PEM encoding.
func NewKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ecdsa key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding ecdsa key: %w", err)
	}
	return key, encodePEM("EC PRIVATE KEY", der), nil
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return serial, nil
}
