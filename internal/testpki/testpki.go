// Package testpki makes certificates for tests: a CA, server certificates
// for loopback and client certificates with a SPIFFE ID or a DNS name,
// each written as PEM files under the test's t.TempDir(). Nothing it makes
// outlives the test, and no private key is ever committed.
//
//	ca := testpki.NewCA(t, "test CA")
//	srv := ca.Server(t)                     // 127.0.0.1, ::1, localhost
//	cli := ca.Client(t, "spiffe://example.org/app")
//	// registryd --tls-cert srv.CertFile --tls-key srv.KeyFile --tls-client-ca ca.CAFile
//	// registryctl --cacert ca.CAFile --cert cli.CertFile --key cli.KeyFile
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CA is a certificate authority; CAFile is its certificate in PEM.
type CA struct {
	CAFile string
	Cert   *x509.Certificate

	key *ecdsa.PrivateKey
	dir string
}

// Pair is a certificate signed by a CA, with its key: CertFile and KeyFile
// are the PEM files, and Cert the parsed certificate (its SerialNumber
// tells one issue from the next).
type Pair struct {
	CertFile, KeyFile string
	Cert              *x509.Certificate

	certPEM, keyPEM []byte
}

// NewCA makes a CA named name, valid for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testpki: CA: %v", err)
	}
	cert, _ := x509.ParseCertificate(der)
	dir := t.TempDir()
	ca := &CA{CAFile: filepath.Join(dir, "ca.pem"), Cert: cert, key: key, dir: dir}
	writeFile(t, ca.CAFile, pemBlock("CERTIFICATE", der))
	return ca
}

// Pool is a certificate pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Server issues a server certificate for hosts (IP addresses or DNS
// names); none means 127.0.0.1, ::1 and localhost.
func (ca *CA) Server(t testing.TB, hosts ...string) *Pair {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "::1", "localhost"}
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: hosts[0]}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(t, tmpl)
}

// Client issues a client certificate for id: a SPIFFE URI SAN when id
// starts with spiffe://, else a DNS SAN.
func (ca *CA) Client(t testing.TB, id string) *Pair {
	t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: id}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if strings.HasPrefix(id, "spiffe://") {
		u, err := url.Parse(id)
		if err != nil {
			t.Fatalf("testpki: SPIFFE ID %q: %v", id, err)
		}
		tmpl.URIs = []*url.URL{u}
	} else {
		tmpl.DNSNames = []string{id}
	}
	return ca.issue(t, tmpl)
}

// issue signs tmpl with a fresh key and serial, valid for a day, and
// writes the pair to a new directory.
func (ca *CA) issue(t testing.TB, tmpl *x509.Certificate) *Pair {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testpki: issue %s: %v", tmpl.Subject.CommonName, err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: key: %v", err)
	}
	p := &Pair{Cert: cert, certPEM: pemBlock("CERTIFICATE", der), keyPEM: pemBlock("PRIVATE KEY", kder)}
	dir, err := os.MkdirTemp(ca.dir, "pair")
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	p.CertFile, p.KeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, p.CertFile, p.certPEM)
	writeFile(t, p.KeyFile, p.keyPEM)
	return p
}

// TLSCertificate is the pair for a tls.Config's Certificates.
func (p *Pair) TLSCertificate(t testing.TB) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(p.certPEM, p.keyPEM)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return c
}

// Install writes the pair over certFile and keyFile, each by an atomic
// rename, as a certificate rotation would: a reader sees the old file or
// the new one, never half of one.
func (p *Pair) Install(t testing.TB, certFile, keyFile string) {
	t.Helper()
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, p.keyPEM}, {certFile, p.certPEM}} {
		tmp := f.path + ".new"
		writeFile(t, tmp, f.data)
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatalf("testpki: %v", err)
		}
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testpki: key: %v", err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testpki: serial: %v", err)
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("testpki: %v", err)
	}
}
