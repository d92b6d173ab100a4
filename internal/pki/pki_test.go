package pki

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
)

func TestLoadedAuthorityIssuesCertificatesTheOriginalVerifies(t *testing.T) {
	ca, err := NewAuthority("test CA")
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadAuthority(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := loaded.ServingCert("server", "127.0.0.1", "nats.example")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	for _, host := range []string{"127.0.0.1", "nats.example"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example"}); err == nil {
		t.Error("certificate verified for a host it was not issued for")
	}
}

func TestLoadAuthorityRefusesALeafAndAMismatchedKey(t *testing.T) {
	ca, _ := NewAuthority("a")
	other, _ := NewAuthority("b")
	leaf, leafKey, _ := ca.ServingCert("leaf", "localhost")
	if _, err := LoadAuthority(leaf, leafKey); err == nil {
		t.Error("a leaf certificate loaded as a CA")
	}
	if _, err := LoadAuthority(ca.CertPEM, other.KeyPEM); err == nil {
		t.Error("a CA loaded with another CA's key")
	}
}
