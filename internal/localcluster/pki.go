package localcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The cluster's PKI, as kubeadm lays it out: one CA signs the API server's serving
// certificate and every client certificate (admin, controller-manager, scheduler, the
// node, the API server's kubelet client); a separate RSA key signs service-account
// tokens. client-go's cert utilities only make self-signed pairs, so the signing is
// here, with the standard library.

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// writePKI creates every key and certificate under dir/pki, once; later calls reuse
// them, so the kubeconfigs of a running cluster stay valid.
func writePKI(dir string, hostIP net.IP) error {
	pki := filepath.Join(dir, "pki")
	if _, err := os.Stat(filepath.Join(pki, "ca.crt")); err == nil {
		return nil
	}
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	authority, err := newCA()
	if err != nil {
		return err
	}
	if err := writePair(pki, "ca", authority.cert.Raw, authority.key); err != nil {
		return err
	}
	serving := &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{hostIP, net.ParseIP("127.0.0.1"), net.ParseIP(kubernetesServiceIP)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if err := authority.issue(pki, "apiserver", serving); err != nil {
		return err
	}
	nodeServing := &x509.Certificate{Subject: pkix.Name{CommonName: NodeName},
		DNSNames: []string{NodeName, "localhost"}, IPAddresses: []net.IP{hostIP, net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if err := authority.issue(pki, "node-serving", nodeServing); err != nil {
		return err
	}
	for name, subject := range clientIdentities {
		c := &x509.Certificate{Subject: subject, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if err := authority.issue(pki, name, c); err != nil {
			return err
		}
	}
	return writeServiceAccountKey(pki)
}

// clientIdentities are the users of the cluster's components, named as in a kubeadm
// cluster so the default RBAC roles (and the Node authorizer) apply to them.
var clientIdentities = map[string]pkix.Name{
	"admin":                   {CommonName: "kubernetes-admin", Organization: []string{"system:masters"}},
	"kube-controller-manager": {CommonName: "system:kube-controller-manager"},
	"kube-scheduler":          {CommonName: "system:kube-scheduler"},
	"apiserver-kubelet":       {CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
	"node":                    {CommonName: "system:node:" + NodeName, Organization: []string{"system:nodes"}},
	// The node process also runs the cluster's add-ons (DNS, volume provisioner); they
	// act as their own user with their own ClusterRole (addons.go).
	"addons": {CommonName: addonsUser},
}

func newCA() (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubeoauth-local-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ca{cert: cert, key: key}, nil
}

func (a *ca) issue(dir, name string, tmpl *x509.Certificate) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return fmt.Errorf("signing %s: %w", name, err)
	}
	return writePair(dir, name, der, key)
}

func writePair(dir, name string, certDER []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".crt"),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".key"),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// writeServiceAccountKey makes the RSA key pair that signs service-account tokens
// (sa.key, for the API server and the controller-manager) and verifies them (sa.pub).
func writeServiceAccountKey(dir string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

// kubeconfig writes a kubeconfig for one of the client identities.
func kubeconfig(dir, identity, server string) (string, error) {
	pki := filepath.Join(dir, "pki")
	if _, ok := clientIdentities[identity]; !ok {
		return "", errors.New("unknown identity " + identity)
	}
	path := filepath.Join(dir, identity+".kubeconfig")
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubeoauth-local
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: kubeoauth-local
  context: {cluster: kubeoauth-local, user: %s}
current-context: kubeoauth-local
`, server, filepath.Join(pki, "ca.crt"), identity, filepath.Join(pki, identity+".crt"), filepath.Join(pki, identity+".key"), identity)
	return path, os.WriteFile(path, []byte(text), 0o600)
}
