package apiserver

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"
	genericapifilters "k8s.io/apiserver/pkg/endpoints/filters"
	"k8s.io/apiserver/pkg/endpoints/request"
)

// TestResponseCompression: large answers to get and list are gzip-compressed once, by the filter; small
// ones, watches and clients that do not accept gzip get the body as it is.
func TestResponseCompression(t *testing.T) {
	large := bytes.Repeat([]byte("resourcechange;"), compressMinSize/10)
	small := []byte(`{"kind":"ResourceChangeList"}`)
	var sawAcceptEncoding string
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAcceptEncoding = r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf")
		w.WriteHeader(http.StatusOK)
		body := large
		if r.URL.Query().Get("small") != "" {
			body = small
		}
		// Written in pieces, as the streaming list encoders do.
		for len(body) > 0 {
			n := min(len(body), 4096)
			if _, err := w.Write(body[:n]); err != nil {
				t.Error(err)
			}
			body = body[n:]
		}
	})
	resolver := &request.RequestInfoFactory{APIPrefixes: sets.NewString("apis", "api"), GrouplessAPIPrefixes: sets.NewString("api")}
	srv := httptest.NewServer(genericapifilters.WithRequestInfo(WithResponseCompression(inner), resolver))
	defer srv.Close()
	const path = "/apis/history.kubehistory.io/v1alpha1/namespaces/team-a/resourcechanges"
	for _, tc := range []struct {
		name, query, acceptEncoding string
		wantGzip                    bool
		wantInnerAE                 string
		want                        []byte
	}{
		{"large list", "", "gzip", true, "", large},
		{"large get", "/name-1", "gzip", true, "", large},
		{"small list", "?small=1", "gzip", false, "", small},
		{"no gzip accepted", "", "", false, "", large},
		{"watch", "?watch=true", "gzip", false, "gzip", large},
		{"watch path", "WATCH", "gzip", false, "gzip", large},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := srv.URL + path + tc.query
			if tc.query == "WATCH" {
				url = srv.URL + "/apis/history.kubehistory.io/v1alpha1/watch/namespaces/team-a/resourcechanges"
			}
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			if tc.acceptEncoding != "" {
				req.Header.Set("Accept-Encoding", tc.acceptEncoding) // set explicitly: the transport does not unzip
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body io.Reader = resp.Body
			if got := resp.Header.Get("Content-Encoding") == "gzip"; got != tc.wantGzip {
				t.Fatalf("Content-Encoding %q, want gzip %v", resp.Header.Get("Content-Encoding"), tc.wantGzip)
			}
			if tc.wantGzip {
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			}
			got, err := io.ReadAll(body)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("body of %d bytes, want %d", len(got), len(tc.want))
			}
			if sawAcceptEncoding != tc.wantInnerAE {
				t.Errorf("the API handler saw Accept-Encoding %q, want %q", sawAcceptEncoding, tc.wantInnerAE)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/vnd.kubernetes.protobuf") {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}
