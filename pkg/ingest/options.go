package ingest

import (
	"fmt"
	"github.com/kubehistory/kubehistory/pkg/change"
	"net"

	"github.com/spf13/pflag"
)

// FlagSetName is the section of --help the audit webhook flags belong to.
const FlagSetName = "audit webhook"

// DefaultMaxBodyBytes caps a request body. kube-apiserver's batching audit webhook sends at most 400
// events per batch and truncates batches to 10 MiB by default (--audit-webhook-truncate-max-batch-size);
// 32 MiB leaves room for operators who raise that.
const DefaultMaxBodyBytes = 32 << 20

// DefaultMaxConnections bounds concurrent connections: kube-apiserver opens one or a few per replica,
// so 64 leaves room for a large HA control plane and its retries while bounding what a client holding
// the certificate (or anyone, during handshakes) can pin.
const DefaultMaxConnections = 64

// DefaultMaxConcurrentStreams bounds the HTTP/2 requests in flight on one connection, each of which
// may buffer up to --audit-max-body-bytes.
const DefaultMaxConcurrentStreams = 8

// Options configure the audit webhook listener.
type Options struct {
	// BindAddress is the IP to listen on; default 127.0.0.1, for a kube-apiserver on the same host.
	BindAddress string
	// Port to listen on; 0 picks a free port (tests).
	Port int
	// CertFile and KeyFile are the serving certificate, which kube-apiserver verifies with the CA in its
	// audit webhook kubeconfig.
	CertFile, KeyFile string
	// ClientCAFile holds the CAs that sign kube-apiserver's client certificate.
	ClientCAFile string
	// AllowedNames are the client certificate common names accepted; empty accepts any certificate the
	// CA signed (as kube-apiserver's --requestheader-allowed-names).
	AllowedNames []string
	// MaxBodyBytes caps a request body; larger requests get 413.
	MaxBodyBytes int64
	// MaxConnections caps concurrent connections; more wait in the kernel's accept queue. Zero is
	// DefaultMaxConnections (so that an Options literal is never unbounded).
	MaxConnections int
	// MaxConcurrentStreams caps concurrent HTTP/2 streams per connection; zero is
	// DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// Policy redacts the bodies of sensitive objects before they are published (not a flag: the server
	// builds it from the installation key and the destinations). Without it a sensitive object's body is
	// dropped, never published as received.
	Policy change.Policy `json:"-"`
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{BindAddress: "127.0.0.1", Port: 8444, MaxBodyBytes: DefaultMaxBodyBytes,
		MaxConnections: DefaultMaxConnections, MaxConcurrentStreams: DefaultMaxConcurrentStreams}
}

// AddFlags adds the flags to fs; put them in a section named FlagSetName.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.BindAddress, "audit-bind-address", o.BindAddress, "IP address on which to serve the audit webhook (POST /audit) for kube-apiserver.")
	fs.IntVar(&o.Port, "audit-port", o.Port, "Port on which to serve the audit webhook, with mutual TLS.")
	fs.StringVar(&o.CertFile, "audit-tls-cert-file", o.CertFile, "File with the x509 certificate (PEM) the audit webhook serves.")
	fs.StringVar(&o.KeyFile, "audit-tls-private-key-file", o.KeyFile, "File with the private key (PEM) matching --audit-tls-cert-file.")
	fs.StringVar(&o.ClientCAFile, "audit-client-ca-file", o.ClientCAFile, "File with the CA bundle (PEM) that must have signed the client certificate kube-apiserver presents to the audit webhook.")
	fs.StringSliceVar(&o.AllowedNames, "audit-allowed-names", o.AllowedNames, "Common names accepted in the audit webhook's client certificate. Empty: any certificate signed by --audit-client-ca-file.")
	fs.Int64Var(&o.MaxBodyBytes, "audit-max-body-bytes", o.MaxBodyBytes, "Largest audit EventList accepted, in bytes; larger requests get 413.")
	fs.IntVar(&o.MaxConnections, "audit-max-connections", o.MaxConnections, "Most concurrent connections to the audit webhook; further ones wait to be accepted.")
	fs.Uint32Var(&o.MaxConcurrentStreams, "audit-max-concurrent-streams", o.MaxConcurrentStreams, "Most concurrent HTTP/2 requests on one audit webhook connection.")
}

// Validate checks the options; it returns every problem, not just the first.
func (o *Options) Validate() []error {
	var errs []error
	if net.ParseIP(o.BindAddress) == nil {
		errs = append(errs, fmt.Errorf("--audit-bind-address %q is not an IP address", o.BindAddress))
	}
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--audit-port %d must be between 0 and 65535", o.Port))
	}
	if o.CertFile == "" || o.KeyFile == "" {
		errs = append(errs, fmt.Errorf("--audit-tls-cert-file and --audit-tls-private-key-file are required"))
	}
	if o.ClientCAFile == "" {
		errs = append(errs, fmt.Errorf("--audit-client-ca-file is required: the audit webhook only accepts kube-apiserver's client certificate"))
	}
	if o.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("--audit-max-body-bytes must be positive, got %d", o.MaxBodyBytes))
	}
	if o.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("--audit-max-connections must not be negative, got %d", o.MaxConnections))
	}
	return errs
}
