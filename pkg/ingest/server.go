package ingest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/netutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/queue"
)

// Publisher stores a batch of encoded changes durably, publishing each as soon as the sequence yields
// it; nil means every change is stored. queue.Publisher implements it on JetStream.
type Publisher interface {
	PublishSeq(ctx context.Context, msgs iter.Seq2[queue.Message, error]) error
}

// RetryAfterSeconds is the Retry-After of a 503: kube-apiserver's webhook client honours it before its
// own backoff, and a second is enough for a NATS reconnect.
const RetryAfterSeconds = 1

// AuditPath is where kube-apiserver posts its batches (the server URL in its audit webhook kubeconfig).
const AuditPath = "/audit"

// Server is the audit webhook.
type Server struct {
	opts      Options
	matcher   RuleMatcher
	publisher Publisher
	tlsConfig *tls.Config
	allowed   map[string]bool
	// last remembers the resourceVersions published per object, to recognize no-op writes.
	last *lastVersions

	// The serving certificate and the client CA are re-read when their files change (cert-manager or
	// kubeadm rotate them in place), and certs hands every new handshake the current pair and pool.
	servingContent *dynamiccertificates.DynamicCertKeyPairContent
	caContent      *dynamiccertificates.DynamicFileCAContent
	certs          *dynamiccertificates.DynamicServingCertificateController

	mu       sync.Mutex
	listener net.Listener
}

// NewServer loads the certificates and builds the server; Run serves it.
func NewServer(opts Options, matcher RuleMatcher, publisher Publisher) (*Server, error) {
	if errs := opts.Validate(); len(errs) > 0 {
		return nil, utilerrors.NewAggregate(errs)
	}
	if matcher == nil || publisher == nil {
		return nil, errors.New("the audit webhook needs a rule matcher and a publisher")
	}
	servingContent, err := dynamiccertificates.NewDynamicServingContentFromFiles("audit-webhook-serving", opts.CertFile, opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading audit webhook serving certificate: %w", err)
	}
	caContent, err := dynamiccertificates.NewDynamicCAContentFromFile("audit-webhook-client-ca", opts.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("loading audit webhook client CA: %w", err)
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The handshake itself refuses a client without a certificate chaining to the CA: no
		// unauthenticated byte of a body is ever read.
		ClientAuth: tls.RequireAndVerifyClientCert,
		// The per-handshake config is a clone of this one, so HTTP/2 must be offered here.
		NextProtos: []string{http2.NextProtoTLS, "http/1.1"},
	}
	certs := dynamiccertificates.NewDynamicServingCertificateController(base, caContent, servingContent, nil, nil)
	servingContent.AddListener(certs)
	caContent.AddListener(certs)
	// Fill the first config now, so that a bad pair fails NewServer instead of every handshake.
	if err := certs.RunOnce(); err != nil {
		return nil, fmt.Errorf("audit webhook TLS: %w", err)
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	allowed := map[string]bool{}
	for _, n := range opts.AllowedNames {
		allowed[n] = true
	}
	RegisterMetrics()
	return &Server{
		opts:           opts,
		matcher:        matcher,
		publisher:      publisher,
		allowed:        allowed,
		last:           newLastVersions(DefaultLastVersions),
		servingContent: servingContent,
		caContent:      caContent,
		certs:          certs,
		tlsConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			NextProtos:         base.NextProtos,
			GetConfigForClient: certs.GetConfigForClient,
		},
	}, nil
}

// Listen binds the port, if Run has not yet; it returns the bound address (useful with port 0) and lets a
// caller fail early on a taken port.
func (s *Server) Listen() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		ln, err := net.Listen("tcp", net.JoinHostPort(s.opts.BindAddress, strconv.Itoa(s.opts.Port)))
		if err != nil {
			return nil, fmt.Errorf("audit webhook: %w", err)
		}
		// Each connection holds a TLS state and buffers; kube-apiserver needs one per replica, so a
		// bound keeps a flood of handshakes from exhausting memory or file descriptors.
		s.listener = netutil.LimitListener(ln, s.opts.MaxConnections)
	}
	return s.listener.Addr(), nil
}

// Run serves until ctx is done, then lets requests in flight finish (their batches are published or
// answered 503) for up to 30 seconds.
func (s *Server) Run(ctx context.Context) error {
	addr, err := s.Listen()
	if err != nil {
		return err
	}
	// The file watchers re-read the serving pair and the CA; the controller rebuilds the TLS config
	// they feed. All stop with ctx.
	go s.servingContent.Run(ctx, 1)
	go s.caContent.Run(ctx, 1)
	go s.certs.Run(1, ctx.Done())
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          klog.NewStandardLogger("WARNING"),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	// Each HTTP/2 stream of one connection is a request with its own body buffer: bound them too.
	if err := http2.ConfigureServer(srv, &http2.Server{MaxConcurrentStreams: s.opts.MaxConcurrentStreams}); err != nil {
		return fmt.Errorf("audit webhook: %w", err)
	}
	errCh := make(chan error, 1)
	go func() {
		klog.InfoS("Serving audit webhook", "address", addr.String(), "path", AuditPath)
		errCh <- srv.ServeTLS(s.listener, "", "")
	}()
	select {
	case err := <-errCh:
		return fmt.Errorf("audit webhook: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	klog.InfoS("Audit webhook stopped", "address", addr.String())
	if err != nil {
		return fmt.Errorf("audit webhook shutdown: %w", err)
	}
	return nil
}

// Handler is the HTTP handler; it expects requests over the server's TLS (it reads the verified client
// certificate).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(AuditPath, s.serveAudit)
	return mux
}

func (s *Server) serveAudit(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.fail(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "only POST of an audit.k8s.io/v1 EventList is allowed")
		return
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		s.fail(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "a client certificate signed by the audit client CA is required")
		return
	}
	cn := r.TLS.VerifiedChains[0][0].Subject.CommonName
	if len(s.allowed) > 0 && !s.allowed[cn] {
		klog.InfoS("Refused audit webhook client", "commonName", cn, "remote", r.RemoteAddr)
		s.fail(w, http.StatusForbidden, metav1.StatusReasonForbidden, fmt.Sprintf("client certificate common name %q is not allowed", cn))
		return
	}

	body, err := readBody(r, s.opts.MaxBodyBytes)
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			s.fail(w, http.StatusRequestEntityTooLarge, metav1.StatusReasonRequestEntityTooLarge,
				fmt.Sprintf("audit EventList larger than %d bytes", s.opts.MaxBodyBytes))
			return
		}
		s.fail(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("reading body: %v", err))
		return
	}
	decoded, err := decodeEvents(body)
	if err != nil {
		s.fail(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}

	// The body is valid: its changes are mapped and encoded one by one, each published as soon as it
	// is ready, so that JetStream stores while the rest is mapped (BenchmarkIngest400).
	start := time.Now()
	reasons := map[string]int{}
	changes := 0
	err = s.publisher.PublishSeq(r.Context(), func(yield func(queue.Message, error) bool) {
		for i := range decoded {
			cs, reason := eventChanges(&decoded[i].Event, decoded[i].head, s.matcher, s.last)
			reasons[reason]++
			for j := range cs {
				changes++
				cs[j].RedactBody(s.opts.Policy)
				if !yield(queue.NewMessage(&cs[j])) {
					return
				}
			}
		}
	})
	if err != nil {
		klog.ErrorS(err, "Publishing audit batch failed; answering 503 so kube-apiserver retries", "events", len(decoded), "changes", changes)
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
		s.fail(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "changes could not be stored, retry the batch: "+err.Error())
		return
	}
	publishDuration.Observe(time.Since(start).Seconds())

	// Counted only once the batch is answered 200, so that a retried batch is counted once per success.
	for reason, n := range reasons {
		result := "dropped"
		if reason == ReasonAccepted {
			result = "accepted"
		}
		eventsTotal.WithLabelValues(result, reason).Add(float64(n))
	}
	changesTotal.Add(float64(changes))
	klog.V(4).InfoS("Audit batch stored", "events", len(decoded), "changes", changes, "accepted", reasons[ReasonAccepted])
	s.write(w, http.StatusOK, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusSuccess,
		Code:     http.StatusOK,
		Message:  fmt.Sprintf("%d events, %d changes stored", len(decoded), changes),
	})
}

var errBodyTooLarge = errors.New("request body too large")

// initialBodyBuffer is the first buffer of a body read: a typical batch of a few dozen events fits, and
// larger ones grow by doubling. It is never sized from Content-Length, which the client chooses: a
// small body claiming gigabytes must not reserve them.
const initialBodyBuffer = 64 << 10

// readBody reads the request body, at most max bytes; a longer body (or a claimed Content-Length above
// max) is errBodyTooLarge, without reading it.
func readBody(r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength > max {
		return nil, errBodyTooLarge
	}
	buf := bytes.NewBuffer(make([]byte, 0, initialBodyBuffer))
	// One byte beyond max tells a body of exactly max bytes from a longer one.
	n, err := buf.ReadFrom(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, errBodyTooLarge
	}
	return buf.Bytes(), nil
}

// fail answers with a Kubernetes Status, which kube-apiserver's webhook client logs with its message.
func (s *Server) fail(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	s.write(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Code:     int32(code),
		Reason:   reason,
		Message:  msg,
	})
}

func (s *Server) write(w http.ResponseWriter, code int, st *metav1.Status) {
	requestsTotal.WithLabelValues(strconv.Itoa(code)).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}
