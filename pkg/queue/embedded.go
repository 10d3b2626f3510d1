package queue

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"k8s.io/klog/v2"
)

// EmbeddedOptions configure the in-process nats-server.
type EmbeddedOptions struct {
	// DataDir holds JetStream's file storage (in DataDir/jetstream). Required: the data must outlive the
	// process, or the changes kube-apiserver got a 200 for would be lost with it.
	DataDir string
	// Host is the address the client listener binds to. Default 127.0.0.1: the embedded server is only for
	// this process (and its operators' nats CLI on the same machine), never for the network.
	Host string
	// Port of the client listener; -1 picks a free port, 0 means nats-server's default 4222.
	Port int
	// InProcessOnly opens no listener at all; connect with Embedded.Connect, which uses an in-process
	// pipe.
	InProcessOnly bool
	// SyncAlways makes JetStream fsync every message before acknowledging it.
	//
	// Trade-off: without it (the default), an acknowledged message is written to the OS page cache and
	// fsynced every SyncInterval (nats-server default 2 minutes); it survives a crash of kubehistory but
	// not a power loss or kernel crash of the node within that interval. With it, nothing acknowledged is
	// ever lost, at the price of one fsync per publish batch on the disk's latency path, typically a
	// several-fold lower ingest throughput on network or slow disks. A replicated external cluster
	// (replicas=3) gives the same guarantee without per-message fsync, since a message is acknowledged
	// only once a quorum stored it.
	SyncAlways bool
	// SyncInterval overrides how often JetStream fsyncs when SyncAlways is false; 0 keeps nats-server's
	// default (2 minutes). A shorter interval narrows the window of loss on power failure.
	SyncInterval time.Duration
	// ServerName names the server in logs and monitoring; default "kubehistory-embedded".
	ServerName string
	// StartTimeout bounds the wait for the server to accept connections; default 30s (JetStream
	// recovers its streams from disk before it is ready, which takes a while for big data dirs).
	StartTimeout time.Duration
}

// Embedded is a running in-process nats-server with JetStream.
type Embedded struct {
	srv  *server.Server
	opts EmbeddedOptions
}

// StartEmbedded starts nats-server with JetStream file storage in opts.DataDir and waits until it
// accepts connections.
func StartEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	if opts.DataDir == "" {
		return nil, errors.New("embedded JetStream needs a data directory")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.ServerName == "" {
		opts.ServerName = "kubehistory-embedded"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.SyncInterval < 0 {
		return nil, fmt.Errorf("sync interval must not be negative, got %s", opts.SyncInterval)
	}
	sopts := &server.Options{
		ServerName: opts.ServerName,
		Host:       opts.Host,
		Port:       opts.Port,
		DontListen: opts.InProcessOnly,
		JetStream:  true,
		StoreDir:   opts.DataDir,
		SyncAlways: opts.SyncAlways,
		// nats-server treats 0 as "use the default" only while parsing a config file; set it here.
		SyncInterval: opts.SyncInterval,
		NoSigs:       true,
		// No HTTP monitoring port: kubehistory exposes its own health checks and metrics.
		HTTPPort: 0,
	}
	if sopts.SyncInterval == 0 {
		sopts.SyncInterval = 2 * time.Minute
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("configuring embedded nats-server: %w", err)
	}
	srv.SetLogger(klogLogger{}, false, false)
	srv.Start()
	if !srv.ReadyForConnections(opts.StartTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats-server not ready after %s", opts.StartTimeout)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, errors.New("embedded nats-server started without JetStream (see its log)")
	}
	klog.InfoS("Embedded JetStream started", "dataDir", opts.DataDir, "clientURL", clientURL(srv, opts),
		"syncAlways", opts.SyncAlways, "syncInterval", sopts.SyncInterval)
	return &Embedded{srv: srv, opts: opts}, nil
}

func clientURL(srv *server.Server, opts EmbeddedOptions) string {
	if opts.InProcessOnly {
		return "in-process"
	}
	return srv.ClientURL()
}

// ClientURL is the nats:// URL of the listener, or "" when InProcessOnly.
func (e *Embedded) ClientURL() string {
	if e.opts.InProcessOnly {
		return ""
	}
	return e.srv.ClientURL()
}

// Port is the port the listener bound (useful with Port -1), or 0 when InProcessOnly.
func (e *Embedded) Port() int {
	if e.opts.InProcessOnly {
		return 0
	}
	addr, ok := e.srv.Addr().(*net.TCPAddr)
	if !ok {
		return 0
	}
	return addr.Port
}

// Connect opens a client connection to the embedded server: through loopback TCP when it listens (so
// the connection reconnects if the server is restarted on the same port), else in-process.
func (e *Embedded) Connect(name string) (*Conn, error) {
	var nc *nats.Conn
	var err error
	if e.opts.InProcessOnly {
		nc, err = nats.Connect("", append(commonConnOptions(name), nats.InProcessServer(e.srv))...)
	} else {
		nc, err = nats.Connect(e.ClientURL(), commonConnOptions(name)...)
	}
	if err != nil {
		return nil, err
	}
	return newConn(nc)
}

// Shutdown stops the server and waits until it released the data directory.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	klog.InfoS("Embedded JetStream stopped", "dataDir", e.opts.DataDir)
}

// klogLogger routes nats-server's log lines into kubehistory's structured log.
type klogLogger struct{}

func (klogLogger) Noticef(format string, v ...any) {
	klog.InfoS("nats-server", "msg", fmt.Sprintf(format, v...))
}
func (klogLogger) Warnf(format string, v ...any) {
	klog.InfoS("nats-server warning", "msg", fmt.Sprintf(format, v...))
}
func (klogLogger) Fatalf(format string, v ...any) {
	klog.ErrorS(nil, "nats-server fatal", "msg", fmt.Sprintf(format, v...))
}
func (klogLogger) Errorf(format string, v ...any) {
	klog.ErrorS(nil, "nats-server error", "msg", fmt.Sprintf(format, v...))
}
func (klogLogger) Debugf(format string, v ...any) {
	klog.V(4).InfoS("nats-server", "msg", fmt.Sprintf(format, v...))
}
func (klogLogger) Tracef(format string, v ...any) {
	klog.V(6).InfoS("nats-server", "msg", fmt.Sprintf(format, v...))
}

var _ server.Logger = klogLogger{}
