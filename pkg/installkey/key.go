// Package installkey holds kubehistory's per-installation secret key. Two things are derived from it:
// the keyed fingerprints (HMAC-SHA256) that stand in for sensitive values in everything kubehistory
// stores, and the seal on the commits kubehistory makes, which tells its own commits from anyone
// else's. The key lives in a Secret in kubehistory's own namespace, created on first start.
package installkey

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// FingerprintPrefix starts every fingerprint: "hmac-sha256:<key ID>:<hex>".
const FingerprintPrefix = "hmac-sha256:"

// DefaultSecretName is the Secret, in kubehistory's namespace, that holds the key.
const DefaultSecretName = "kubehistory-installation-key"

// Keys of the Secret's data.
const (
	SecretKeyMaterial = "key"
	SecretKeyID       = "keyID"
)

// minKeyBytes: a shorter key would make fingerprints of short values guessable.
const minKeyBytes = 32

// Key is the installation key. The zero Key is unusable: Fingerprint and Derive panic on it, so a code
// path that forgot the key fails loudly rather than hashing with an empty key.
type Key struct {
	id       string
	material []byte
}

// New returns the key with the given material; the ID is derived from the material (the first 8 hex
// digits of its SHA-256), so that a reader of Git can tell which key made a fingerprint without
// learning anything about the key.
func New(material []byte) (Key, error) {
	if len(material) < minKeyBytes {
		return Key{}, fmt.Errorf("installation key: %d bytes, at least %d needed", len(material), minKeyBytes)
	}
	sum := sha256.Sum256(material)
	return Key{id: hex.EncodeToString(sum[:4]), material: append([]byte(nil), material...)}, nil
}

// Generate returns a new random key.
func Generate() (Key, error) {
	b := make([]byte, minKeyBytes)
	if _, err := rand.Read(b); err != nil {
		return Key{}, err
	}
	return New(b)
}

// ForTest returns a fixed key derived from seed, for tests only.
func ForTest(seed string) Key {
	sum := sha256.Sum256([]byte("kubehistory-test-key/" + seed))
	k, _ := New(sum[:])
	return k
}

// ID names the key.
func (k Key) ID() string { return k.id }

// IsZero is true for a Key that was never set.
func (k Key) IsZero() bool { return len(k.material) == 0 }

// Fingerprint is the keyed fingerprint of a value: equal values compare equal within one installation,
// and nothing about the value can be learnt without the key.
func (k Key) Fingerprint(value []byte) string {
	m := hmac.New(sha256.New, k.Derive("fingerprint"))
	m.Write(value)
	return FingerprintPrefix + k.id + ":" + hex.EncodeToString(m.Sum(nil))
}

// Derive returns a subkey for one purpose, so that a fingerprint can never be replayed as a seal.
func (k Key) Derive(purpose string) []byte {
	if k.IsZero() {
		panic("installkey: the installation key is not set")
	}
	m := hmac.New(sha256.New, k.material)
	m.Write([]byte("kubehistory/" + purpose))
	return m.Sum(nil)
}

// IsFingerprint says whether s has the shape of a fingerprint (of any key).
func IsFingerprint(s string) bool {
	rest, ok := strings.CutPrefix(s, FingerprintPrefix)
	if !ok {
		return false
	}
	id, sum, ok := strings.Cut(rest, ":")
	return ok && len(id) == 8 && len(sum) == 64 && isHex(id) && isHex(sum)
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// FromSecret reads the key from a Secret's data.
func FromSecret(s *corev1.Secret) (Key, error) {
	k, err := New(s.Data[SecretKeyMaterial])
	if err != nil {
		return Key{}, fmt.Errorf("Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return k, nil
}

// Ensure reads the key from the Secret namespace/name, creating the Secret with a new random key when
// it does not exist. Replicas starting together agree: the one whose create loses reads the winner's.
func Ensure(ctx context.Context, kube kubernetes.Interface, namespace, name string) (Key, error) {
	secrets := kube.CoreV1().Secrets(namespace)
	for attempt := 0; attempt < 3; attempt++ {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return FromSecret(s)
		}
		if !apierrors.IsNotFound(err) {
			return Key{}, fmt.Errorf("reading the installation key Secret %s/%s: %w", namespace, name, err)
		}
		k, err := Generate()
		if err != nil {
			return Key{}, err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app.kubernetes.io/name": "kubehistory"}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{SecretKeyMaterial: k.material, SecretKeyID: []byte(k.id)},
		}, metav1.CreateOptions{})
		if err == nil {
			klog.InfoS("Created the installation key", "secret", klog.KRef(namespace, name), "keyID", k.id)
			return k, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return Key{}, fmt.Errorf("creating the installation key Secret %s/%s: %w", namespace, name, err)
		}
	}
	return Key{}, errors.New("installation key: the Secret was created and deleted concurrently")
}
