package ingest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestReadBody(t *testing.T) {
	cases := []struct {
		name          string
		body          string
		contentLength int64
		max           int64
		wantErr       error
	}{
		{name: "exact length", body: "0123456789", contentLength: 10, max: 10},
		{name: "unknown length (chunked)", body: "0123456789", contentLength: -1, max: 10},
		{name: "chunked body beyond max", body: "0123456789x", contentLength: -1, max: 10, wantErr: errBodyTooLarge},
		{name: "claimed length beyond max", body: "0", contentLength: 11, max: 10, wantErr: errBodyTooLarge},
		{name: "small body claiming a huge length", body: "0123456789", contentLength: 1 << 40, max: 1 << 41},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, AuditPath, strings.NewReader(tc.body))
			r.ContentLength = tc.contentLength
			got, err := readBody(r, tc.max)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("readBody error %v, want %v", err, tc.wantErr)
			}
			if err == nil && string(got) != tc.body {
				t.Errorf("readBody = %q, want %q", got, tc.body)
			}
		})
	}
}

// TestReadBodyDoesNotTrustContentLength: a client's claimed Content-Length must not size an allocation,
// or a few requests claiming the maximum each would exhaust memory before a byte arrived.
func TestReadBodyDoesNotTrustContentLength(t *testing.T) {
	const claimed = 1 << 30
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 4 {
		r := httptest.NewRequest(http.MethodPost, AuditPath, strings.NewReader(`{"items":[]}`))
		r.ContentLength = claimed
		if _, err := readBody(r, 2*claimed); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 4*(initialBodyBuffer+64<<10) {
		t.Errorf("4 small bodies claiming %d bytes each allocated %d bytes", claimed, got)
	}
}

// TestCertificateRotation: the serving certificate and the client CA are replaced on disk while the
// server runs; a client that trusts only the new CA, with a certificate the new CA signed, gets through
// without a restart, and one with the old CA's certificate no longer does.
func TestCertificateRotation(t *testing.T) {
	pki := newTestPKI(t)
	js := startJetStream(t)
	url := startServer(t, pki, Options{AllowedNames: []string{"kube-apiserver"}}, teamAMatcher, js.pub)
	old := pki.client(t, "kube-apiserver", pki.ca, pki.caKey)
	if r := mustPost(t, old, url, []byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}`), http.StatusOK); r.code != http.StatusOK {
		t.Fatal(r)
	}

	ca2, ca2Key, ca2DER := newCA(t, "audit-client-ca-2")
	_, key, der := newCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "kubehistory"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca2, ca2Key)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, pki.keyFile, "EC PRIVATE KEY", keyDER)
	writePEM(t, pki.certFile, "CERTIFICATE", der)
	writePEM(t, pki.caFile, "CERTIFICATE", ca2DER)

	pool2 := x509.NewCertPool()
	pool2.AddCert(ca2)
	newClient := clientWith(t, pool2, "kube-apiserver", ca2, ca2Key)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var lastErr error
	for {
		// Polled on the handshake itself: the reload is signalled by nothing else a client can see.
		resp, err := newClient.Post(url, "application/json", bytes.NewReader([]byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}`)))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("after rotation: %s", resp.Status)
			}
			if resp.ProtoMajor != 2 {
				t.Errorf("after rotation the client spoke %s, want HTTP/2", resp.Proto)
			}
			break
		}
		lastErr = err
		select {
		case <-ctx.Done():
			t.Fatalf("the rotated certificate was never served: %v", lastErr)
		case <-time.After(50 * time.Millisecond): // poll interval, not an assertion
		}
	}
	// The old client trusts only the old CA and presents a certificate of it: refused either way.
	oldAgain := pki.client(t, "kube-apiserver", pki.ca, pki.caKey)
	if _, err := post(t, oldAgain, url, []byte(`{}`)); err == nil {
		t.Error("a client of the old CA still connects after rotation")
	}
}

func clientWith(t testing.TB, roots *x509.CertPool, cn string, signer *x509.Certificate, signerKey *ecdsa.PrivateKey) *http.Client {
	cert, key, der := newCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, signer, signerKey)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	// No keep-alive: every attempt is a new handshake with whatever the server serves now.
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, DisableKeepAlives: true}}
}
