package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Certificate is a self-signed certificate for 127.0.0.1, made in Go (no
// openssl needed), for servers that the tests reach over TLS.
type Certificate struct {
	// CertFile and KeyFile are the PEM files for the server.
	CertFile, KeyFile string
	// Pool trusts the certificate, for the clients.
	Pool *x509.CertPool
}

// NewCertificate writes a certificate and key for 127.0.0.1, valid for a
// day, into dir.
func NewCertificate(dir string) (*Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	c := &Certificate{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"), Pool: x509.NewCertPool()}
	if err := os.WriteFile(c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	if err := os.WriteFile(c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	c.Pool.AddCert(cert)
	return c, nil
}

// ClientConfig returns a TLS configuration that trusts only this certificate.
func (c *Certificate) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// MariaDBArgs are the mariadbd flags that serve TLS with this certificate;
// pass them in MySQLOptions.Args. Add REQUIRE SSL to a user to refuse it
// plain connections.
func (c *Certificate) MariaDBArgs() []string {
	return []string{"--ssl-cert=" + c.CertFile, "--ssl-key=" + c.KeyFile, "--ssl-ca=" + c.CertFile}
}

// StartRedisTLS starts a redis-server that also listens for TLS on TLSPort,
// with a certificate made for it (Redis.TLS). The plain port stays open for
// the harness's own controls; point the code under test at TLSAddr.
func StartRedisTLS() (*Redis, error) {
	var cert *Certificate
	var tlsPort int
	r, err := startRedis("", func(dir string, _ int) ([]string, error) {
		var err error
		if cert == nil {
			if cert, err = NewCertificate(dir); err != nil {
				return nil, err
			}
		}
		if tlsPort, err = freePort(); err != nil {
			return nil, err
		}
		return []string{
			"--tls-port", strconv.Itoa(tlsPort),
			"--tls-cert-file", cert.CertFile,
			"--tls-key-file", cert.KeyFile,
			"--tls-ca-cert-file", cert.CertFile,
			"--tls-auth-clients", "no",
		}, nil
	})
	if err != nil {
		return nil, err
	}
	r.TLSPort, r.TLS = tlsPort, cert
	return r, nil
}

// TLSAddr returns host:port of the TLS listener ("" when it has none).
func (r *Redis) TLSAddr() string {
	if r.TLSPort == 0 {
		return ""
	}
	return "127.0.0.1:" + strconv.Itoa(r.TLSPort)
}
