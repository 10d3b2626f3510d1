package installkey

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

func TestNewRefusesShortKeys(t *testing.T) {
	if _, err := New(make([]byte, 16)); err == nil {
		t.Fatal("a 16-byte key accepted")
	}
}

func TestFingerprint(t *testing.T) {
	a, b := ForTest("a"), ForTest("b")
	fa := a.Fingerprint([]byte("hunter2"))
	if !IsFingerprint(fa) || !strings.HasPrefix(fa, FingerprintPrefix+a.ID()+":") {
		t.Fatalf("fingerprint %q does not have the documented shape", fa)
	}
	if fa != a.Fingerprint([]byte("hunter2")) {
		t.Fatal("equal values do not compare equal under one key")
	}
	if fa == b.Fingerprint([]byte("hunter2")) || a.ID() == b.ID() {
		t.Fatal("two keys give the same fingerprint or ID")
	}
	if string(a.Derive("fingerprint")) == string(a.Derive("seal")) {
		t.Fatal("subkeys of different purposes are equal")
	}
	for _, bad := range []string{"sha256:" + strings.Repeat("0", 64), "hmac-sha256:xyz:00", "hmac-sha256:0011223:" + strings.Repeat("0", 64)} {
		if IsFingerprint(bad) {
			t.Errorf("%q taken for a fingerprint", bad)
		}
	}
}

func TestZeroKeyPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("the zero key made a fingerprint")
		}
	}()
	Key{}.Fingerprint([]byte("x"))
}

// Ensure creates the Secret once and every later call (another replica, a restart) reads the same key.
func TestEnsure(t *testing.T) {
	ctx := context.Background()
	kube := kubefake.NewSimpleClientset()
	k1, err := Ensure(ctx, kube, "kubehistory-system", DefaultSecretName)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := Ensure(ctx, kube, "kubehistory-system", DefaultSecretName)
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID() != k2.ID() || k1.Fingerprint([]byte("v")) != k2.Fingerprint([]byte("v")) {
		t.Fatal("a second start got another key")
	}
	s, err := kube.CoreV1().Secrets("kubehistory-system").Get(ctx, DefaultSecretName, metav1.GetOptions{})
	if err != nil || string(s.Data[SecretKeyID]) != k1.ID() {
		t.Fatalf("Secret: %v %v", err, s)
	}
	// A Secret holding a key too short to be safe is refused, not used.
	bad := kubefake.NewSimpleClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "k"}, Data: map[string][]byte{SecretKeyMaterial: []byte("short")}})
	if _, err := Ensure(ctx, bad, "ns", "k"); err == nil {
		t.Fatal("a short key accepted")
	}
}
