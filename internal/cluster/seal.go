package cluster

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
)

// minKeyBytes is the least secret a key file must hold: 128 bits, as
// `openssl rand -base64 32` gives with room to spare.
const minKeyBytes = 16

// Sealer encrypts values at rest in Redis (account and private keys, ticket
// keys) with AES-256-GCM, so that a copy of Redis's data (an AOF file, a
// replica, a backup) gives nothing away without the key file.
type Sealer struct {
	aead cipher.AEAD
}

// LoadSealer reads the key file: any secret of at least 16 bytes (surrounding
// whitespace ignored), hashed with SHA-256 into the AES key. Every instance
// of a fleet needs the same file.
func LoadSealer(path string) (*Sealer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	secret := bytes.TrimSpace(b)
	if len(secret) < minKeyBytes {
		return nil, fmt.Errorf("%s: holds %d bytes, at least %d needed (e.g. openssl rand -base64 32)", path, len(secret), minKeyBytes)
	}
	return NewSealer(secret)
}

// NewSealer derives the AES key from secret.
func NewSealer(secret []byte) (*Sealer, error) {
	sum := sha256.Sum256(append([]byte("tlsguard cluster key v1\x00"), secret...))
	block, err := aes.NewCipher(sum[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// seal encrypts value bound to name (the key it is stored under without the
// prefix), so that values cannot be swapped between keys unnoticed.
func (s *Sealer) seal(name string, value []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(value)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return s.aead.Seal(nonce, nonce, value, []byte(name))
}

// errSealed is a value that does not open: another key file, or tampering.
var errSealed = errors.New("cluster: value does not decrypt (a different cluster.key_file, or tampered with)")

func (s *Sealer) open(name string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, errSealed
	}
	out, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(name))
	if err != nil {
		return nil, errSealed
	}
	return out, nil
}
