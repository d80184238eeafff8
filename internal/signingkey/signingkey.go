package signingkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/go-jose/go-jose/v3"
)

// Signing algorithms.
const (
	ES256 = "ES256"
	RS256 = "RS256"
)

// Key is a signing key with its key ID (the RFC 7638 thumbprint of its public half).
type Key struct {
	Private   crypto.Signer
	ID        string
	Algorithm string
}

// Keys are the current signing key and, during a rotation, the previous one: tokens
// are signed with Current; JWKS publishes both, so tokens signed just before the
// rotation still verify.
type Keys struct {
	Current  *Key
	Previous *Key
}

// Load reads PEM private keys (PKCS#8, SEC 1 or PKCS#1) from files, as mounted from
// a Secret. previousPath may be empty.
func Load(currentPath, previousPath string) (*Keys, error) {
	cur, err := loadFile(currentPath)
	if err != nil {
		return nil, err
	}
	ks := &Keys{Current: cur}
	if previousPath != "" {
		if ks.Previous, err = loadFile(previousPath); err != nil {
			return nil, err
		}
	}
	return ks, nil
}

func loadFile(path string) (*Key, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- the operator's mounted key file
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	k, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
}

// Parse parses a PEM private key: an EC P-256 key signs ES256, an RSA key (2048 bits
// or more) RS256.
func Parse(data []byte) (*Key, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var (
		priv any
		err  error
	)
	switch block.Type {
	case "EC PRIVATE KEY":
		priv, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		priv, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		priv, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, err
	}
	var alg string
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("an EC signing key must be on P-256 (ES256)")
		}
		alg = ES256
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("an RSA signing key needs at least 2048 bits, this one has %d", k.N.BitLen())
		}
		alg = RS256
	default:
		return nil, fmt.Errorf("unsupported key type %T: use EC P-256 or RSA", priv)
	}
	signer := priv.(crypto.Signer)
	thumb, err := (&jose.JSONWebKey{Key: signer.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &Key{Private: signer, ID: base64.RawURLEncoding.EncodeToString(thumb), Algorithm: alg}, nil
}

// Generate makes a new private key for alg, PEM-encoded (PKCS#8).
func Generate(alg string) ([]byte, error) {
	var (
		priv any
		err  error
	)
	switch alg {
	case ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("signing algorithm %q: want ES256 or RS256", alg)
	}
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// JWKS is the public key set to publish: the current key first, then the previous.
func (ks *Keys) JWKS() jose.JSONWebKeySet {
	var set jose.JSONWebKeySet
	for _, k := range []*Key{ks.Current, ks.Previous} {
		if k != nil {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Private.Public(), KeyID: k.ID, Algorithm: k.Algorithm, Use: "sig"})
		}
	}
	return set
}
