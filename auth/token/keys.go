package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sort"

	"github.com/golang-jwt/jwt/v5"
)

// KeySet is the active signing key and every public key whose tokens are
// accepted (the signer's own among them). Rotation: add the new key as
// signer and keep the old one as a verification key until its last token
// has expired. A KeySet is immutable and safe for concurrent use.
type KeySet struct {
	signer     crypto.Signer
	signKID    string
	signMethod jwt.SigningMethod
	verify     map[string]verifyKey
}

type verifyKey struct {
	key    crypto.PublicKey
	method jwt.SigningMethod
}

// NewKeySet returns a KeySet signing with signer (an EC P-256 key, ES256,
// or an RSA key of at least 2048 bits, RS256) and also accepting tokens
// signed by the verification keys. It returns an error for any other key
// type.
func NewKeySet(signer crypto.Signer, verification ...crypto.PublicKey) (*KeySet, error) {
	if signer == nil {
		return nil, errors.New("no signing key")
	}
	k := &KeySet{signer: signer, verify: map[string]verifyKey{}}
	method, kid, err := describeKey(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	k.signKID, k.signMethod = kid, method
	k.verify[kid] = verifyKey{key: signer.Public(), method: method}
	for i, pub := range verification {
		method, kid, err := describeKey(pub)
		if err != nil {
			return nil, fmt.Errorf("verification key %d: %w", i, err)
		}
		k.verify[kid] = verifyKey{key: pub, method: method}
	}
	return k, nil
}

// LoadKeySet reads a PEM private key to sign with and PEM keys (public or
// private) to accept as well. It returns an error naming the file that is
// missing, unreadable or holds an unsupported key.
func LoadKeySet(signingKeyFile string, verificationKeyFiles ...string) (*KeySet, error) {
	priv, err := readKey(signingKeyFile)
	if err != nil {
		return nil, err
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not a private key", signingKeyFile)
	}
	var pubs []crypto.PublicKey
	for _, f := range verificationKeyFiles {
		k, err := readKey(f)
		if err != nil {
			return nil, err
		}
		if s, ok := k.(crypto.Signer); ok {
			k = s.Public()
		}
		pubs = append(pubs, k)
	}
	ks, err := NewKeySet(signer, pubs...)
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	return ks, nil
}

// SigningKeyID returns the kid of the active signing key.
func (k *KeySet) SigningKeyID() string { return k.signKID }

// KeyIDs returns the kids of every accepted key, sorted.
func (k *KeySet) KeyIDs() []string {
	ids := make([]string, 0, len(k.verify))
	for id := range k.verify {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (k *KeySet) sign(claims *Claims) (string, error) {
	t := jwt.NewWithClaims(k.signMethod, claims)
	t.Header["kid"] = k.signKID
	s, err := t.SignedString(k.signer)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// describeKey returns the signing method and kid (the RFC 7638 JWK
// thumbprint) of a supported public key.
func describeKey(pub crypto.PublicKey) (jwt.SigningMethod, string, error) {
	var jwk any
	var method jwt.SigningMethod
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, "", errors.New("EC keys must use P-256 (ES256)")
		}
		ek, err := k.ECDH()
		if err != nil {
			return nil, "", fmt.Errorf("EC key: %w", err)
		}
		b := ek.Bytes() // 0x04 || X || Y
		enc := base64.RawURLEncoding.EncodeToString
		// Field order is the lexicographic one RFC 7638 requires.
		jwk = struct {
			Crv string `json:"crv"`
			Kty string `json:"kty"`
			X   string `json:"x"`
			Y   string `json:"y"`
		}{"P-256", "EC", enc(b[1:33]), enc(b[33:])}
		method = jwt.SigningMethodES256
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, "", errors.New("RSA keys must have at least 2048 bits")
		}
		enc := base64.RawURLEncoding.EncodeToString
		jwk = struct {
			E   string `json:"e"`
			Kty string `json:"kty"`
			N   string `json:"n"`
		}{enc(big.NewInt(int64(k.E)).Bytes()), "RSA", enc(k.N.Bytes())}
		method = jwt.SigningMethodRS256
	default:
		return nil, "", fmt.Errorf("unsupported key type %T (want EC P-256 or RSA)", pub)
	}
	data, err := json.Marshal(jwk)
	if err != nil {
		return nil, "", fmt.Errorf("key thumbprint: %w", err)
	}
	sum := sha256.Sum256(data)
	return method, base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

func readKey(path string) (any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return k, nil
}

// ParseKey parses the first PEM block of data: a private key (PKCS #8,
// SEC 1 "EC PRIVATE KEY" or PKCS #1 "RSA PRIVATE KEY") or a public key
// ("PUBLIC KEY"). It returns an error for anything else.
func ParseKey(data []byte) (any, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var (
		k   any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	return k, nil
}

// GenerateKeyFile writes a new EC P-256 private key (PKCS #8 PEM, mode
// 0600) to path, for `registry auth keygen`. It refuses to overwrite an
// existing file (the error wraps fs.ErrExist).
func GenerateKeyFile(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}
