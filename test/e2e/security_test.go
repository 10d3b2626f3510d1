package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestFrontProxyHeadersNeedTheFrontProxyCertificate calls kubehistory-apiserver directly, as an attacker
// on the network would, with X-Remote-User: admin. The headers are trusted only over a connection
// authenticated by the front-proxy client certificate that kube-apiserver's aggregator uses.
func TestFrontProxyHeadersNeedTheFrontProxyCertificate(t *testing.T) {
	pki := filepath.Join(env.plane.Dir, "pki")
	caPEM, err := os.ReadFile(env.kh.CA.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	// A cluster-CA client certificate for a user without RBAC.
	if _, err := env.plane.Kubeconfig("nobody-direct"); err != nil {
		t.Fatal(err)
	}
	load := func(name string) []tls.Certificate {
		c, err := tls.LoadX509KeyPair(filepath.Join(pki, name+".crt"), filepath.Join(pki, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/apis/history.kubehistory.io/v1alpha1/namespaces/team-a/resourcechanges", env.kh.Port)
	cases := []struct {
		name  string
		certs []tls.Certificate
		want  int
	}{
		{"no client certificate", nil, http.StatusForbidden},                                   // anonymous
		{"cluster-CA certificate of nobody", load("user-nobody-direct"), http.StatusForbidden}, // headers ignored
		{"front-proxy certificate", load("front-proxy-client"), http.StatusOK},                 // headers trusted
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: tc.certs}}}
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("X-Remote-User", "admin")
			req.Header.Set("X-Remote-Group", "system:masters")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
