package queue

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"k8s.io/klog/v2"
)

// ConnectOptions reach an external NATS cluster.
type ConnectOptions struct {
	// URL is one or more comma-separated nats:// or tls:// URLs of the cluster.
	URL string
	// Name identifies this client in the server's connection list.
	Name string
	// CAFile verifies the servers' certificates; CertFile and KeyFile are the client certificate for
	// servers that require mutual TLS.
	CAFile, CertFile, KeyFile string
	// CredsFile is a NATS credentials file (JWT + NKey seed), for decentralized auth.
	CredsFile string
	// User and Password, for servers with plain user authentication.
	User, Password string
}

// Validate reports inconsistent options.
func (o ConnectOptions) Validate() []error {
	var errs []error
	if o.URL == "" {
		errs = append(errs, errors.New("a NATS URL is required"))
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		errs = append(errs, errors.New("the NATS client certificate and key must be given together"))
	}
	if o.CredsFile != "" && o.User != "" {
		errs = append(errs, errors.New("use either a NATS credentials file or a user/password, not both"))
	}
	if o.Password != "" && o.User == "" {
		errs = append(errs, errors.New("a NATS password needs a user"))
	}
	return errs
}

// Connect dials the external NATS cluster. The connection reconnects forever: a NATS outage must make
// ingest answer 503 (so kube-apiserver retries) and recover by itself, never require a restart.
func Connect(o ConnectOptions) (*Conn, error) {
	if errs := o.Validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	opts := commonConnOptions(o.Name)
	if o.CAFile != "" {
		opts = append(opts, nats.RootCAs(o.CAFile))
	}
	if o.CertFile != "" {
		opts = append(opts, nats.ClientCert(o.CertFile, o.KeyFile))
	}
	if o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", o.URL, err)
	}
	return newConn(nc)
}

func commonConnOptions(name string) []nats.Option {
	if name == "" {
		name = "kubehistory"
	}
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// While disconnected, publishes fail at once (the Publisher checks the status first) rather than
		// pile up in a reconnect buffer whose fate the HTTP caller could not learn.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			klog.ErrorS(err, "Disconnected from NATS", "name", name)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			klog.InfoS("Reconnected to NATS", "name", name, "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			klog.ErrorS(err, "NATS asynchronous error", "name", name)
		}),
	}
}
