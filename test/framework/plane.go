// Package framework runs a real, local Kubernetes control plane for tests and the demo: etcd and the
// pinned kube-apiserver (built from the Go module proxy by hack/control-plane-bins.sh into a cache outside
// the repository), with its PKI, front-proxy (aggregation) flags and an audit webhook pointing at
// kubehistory's audit listener. Everything binds to 127.0.0.1; Stop ends only the processes it started.
package framework

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubehistory/kubehistory/pkg/cmd/server"
)

// Config says how to start a Plane.
type Config struct {
	// Dir receives the PKI, kubeconfigs, etcd data and logs.
	Dir string
	// AuditPort is the port of kubehistory's audit listener on 127.0.0.1 that kube-apiserver's audit
	// webhook posts to; 0 picks a free one.
	AuditPort int
	// AuditWebhookMode is batch (default) or blocking.
	AuditWebhookMode string
	// Detach starts the processes in their own process group so they outlive the caller (the demo).
	Detach bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Plane is a running etcd + kube-apiserver.
type Plane struct {
	Dir  string
	Bins Binaries

	CA           *CA
	FrontProxyCA *CA
	// AuditCA signs kubehistory's audit listener certificate and kube-apiserver's audit client
	// certificate.
	AuditCA *CA
	// AuditServing is the certificate the audit listener serves (SAN 127.0.0.1, localhost).
	AuditServing CertPair
	// AuditClientName is the CN of the client certificate kube-apiserver presents to the audit listener.
	AuditClientName string
	AuditPort       int

	APIServerPort   int
	APIServerURL    string
	etcdURL         string
	AdminKubeconfig string

	log   io.Writer
	mu    sync.Mutex
	procs []*exec.Cmd
}

// Binaries are the control-plane executables.
type Binaries struct {
	KubeAPIServer string
	Etcd          string
}

// RepoRoot is the repository's top folder.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// EnsureBinaries builds (once per version, into the cache) and returns the control-plane binaries.
func EnsureBinaries(log io.Writer) (Binaries, error) {
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "control-plane-bins.sh"))
	cmd.Stderr = log
	out, err := cmd.Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("hack/control-plane-bins.sh: %w", err)
	}
	var b Binaries
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "KUBE_APISERVER":
			b.KubeAPIServer = v
		case "ETCD":
			b.Etcd = v
		}
	}
	if b.KubeAPIServer == "" || b.Etcd == "" {
		return Binaries{}, fmt.Errorf("hack/control-plane-bins.sh printed no binaries: %q", out)
	}
	return b, nil
}

// FreePort returns a port free on 127.0.0.1 right now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start builds what is missing and starts etcd and kube-apiserver, returning once /readyz answers ok.
func Start(ctx context.Context, cfg Config) (*Plane, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.AuditWebhookMode == "" {
		cfg.AuditWebhookMode = "batch"
	}
	bins, err := EnsureBinaries(cfg.Log)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	p := &Plane{Dir: cfg.Dir, Bins: bins, log: cfg.Log, AuditPort: cfg.AuditPort, AuditClientName: "kube-apiserver-audit"}
	if p.AuditPort == 0 {
		if p.AuditPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if p.APIServerPort, err = FreePort(); err != nil {
		return nil, err
	}
	p.APIServerURL = fmt.Sprintf("https://127.0.0.1:%d", p.APIServerPort)
	if err := p.writePKI(); err != nil {
		return nil, fmt.Errorf("generating PKI: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			p.Stop()
		}
	}()
	if err := p.startEtcd(ctx, cfg.Detach); err != nil {
		return nil, err
	}
	if err := p.startAPIServer(ctx, cfg); err != nil {
		return nil, err
	}
	ok = true
	return p, nil
}

func (p *Plane) pki() string { return filepath.Join(p.Dir, "pki") }

func (p *Plane) writePKI() error {
	dir := p.pki()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var err error
	if p.CA, err = NewCA(dir, "ca"); err != nil {
		return err
	}
	if p.FrontProxyCA, err = NewCA(dir, "front-proxy-ca"); err != nil {
		return err
	}
	if p.AuditCA, err = NewCA(dir, "audit-ca"); err != nil {
		return err
	}
	if _, err = p.CA.Issue(dir, "apiserver", CertOptions{
		CommonName: "kube-apiserver", Server: true,
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPs:      []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
	}); err != nil {
		return err
	}
	if _, err = p.FrontProxyCA.Issue(dir, "front-proxy-client", CertOptions{CommonName: "front-proxy-client", Client: true}); err != nil {
		return err
	}
	if p.AuditServing, err = p.AuditCA.Issue(dir, "audit-serving", CertOptions{
		CommonName: "kubehistory-audit", Server: true, DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")},
	}); err != nil {
		return err
	}
	if _, err = p.AuditCA.Issue(dir, "audit-client", CertOptions{CommonName: p.AuditClientName, Client: true}); err != nil {
		return err
	}
	if _, _, err = writeServiceAccountKey(dir); err != nil {
		return err
	}
	p.AdminKubeconfig, err = p.Kubeconfig("admin", "system:masters")
	return err
}

// Kubeconfig issues a client certificate for user in groups and writes a kubeconfig for it.
func (p *Plane) Kubeconfig(user string, groups ...string) (string, error) {
	file := "user-" + strings.NewReplacer(":", "_", "/", "_").Replace(user)
	pair, err := p.CA.Issue(p.pki(), file, CertOptions{CommonName: user, Organization: groups, Client: true})
	if err != nil {
		return "", err
	}
	path := filepath.Join(p.Dir, file+".kubeconfig")
	return path, writeKubeconfig(path, p.APIServerURL, p.CA.CertFile, pair)
}

func writeKubeconfig(path, server, caFile string, client CertPair) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	cert, err := os.ReadFile(client.CertFile)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(client.KeyFile)
	if err != nil {
		return err
	}
	b64 := base64.StdEncoding.EncodeToString
	return os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: user
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: local
  context: {cluster: local, user: user}
current-context: local
`, server, b64(ca), b64(cert), b64(key))), 0o600)
}

func (p *Plane) start(name string, detach bool, args ...string) (*exec.Cmd, error) {
	logFile, err := os.Create(filepath.Join(p.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Own process group: Stop can end the process without touching anything else, and the demo's
	// processes outlive the command that started them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(p.Dir, name+".pid"), []byte(fmt.Sprint(cmd.Process.Pid)), 0o600); err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.procs = append(p.procs, cmd)
	p.mu.Unlock()
	if !detach {
		go func() { _ = cmd.Wait(); logFile.Close() }()
	}
	fmt.Fprintf(p.log, "started %s (pid %d), log %s\n", name, cmd.Process.Pid, logFile.Name())
	return cmd, nil
}

func (p *Plane) startEtcd(ctx context.Context, detach bool) error {
	client, err := FreePort()
	if err != nil {
		return err
	}
	peer, err := FreePort()
	if err != nil {
		return err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	if _, err := p.start("etcd", detach, p.Bins.Etcd,
		"--name=default",
		"--data-dir="+filepath.Join(p.Dir, "etcd-data"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync", "--log-level=warn",
	); err != nil {
		return err
	}
	p.etcdURL = clientURL
	return WaitFor(ctx, 60*time.Second, func() error {
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
}

// AuditLogFile is kube-apiserver's audit log in the plane's directory: a second backend beside the
// webhook, with the same policy, so that tests read exactly what kube-apiserver audits.
const AuditLogFile = "audit.log"

func (p *Plane) startAPIServer(ctx context.Context, cfg Config) error {
	dir := p.pki()
	policy := filepath.Join(p.Dir, "audit-policy.yaml")
	// The plane runs the shipped policy (`kubehistory-apiserver audit-policy --all-resources`), so that
	// the e2e tests exercise what operators deploy.
	policyYAML, err := server.AllResourcesAuditPolicyYAML()
	if err != nil {
		return err
	}
	if err := os.WriteFile(policy, policyYAML, 0o600); err != nil {
		return err
	}
	webhook := filepath.Join(p.Dir, "audit-webhook.kubeconfig")
	if err := writeKubeconfig(webhook, fmt.Sprintf("https://127.0.0.1:%d/audit", p.AuditPort), p.AuditCA.CertFile,
		CertPair{CertFile: filepath.Join(dir, "audit-client.crt"), KeyFile: filepath.Join(dir, "audit-client.key")}); err != nil {
		return err
	}
	args := append(p.apiServerArgs(p.APIServerPort),
		"--audit-policy-file="+policy,
		"--audit-webhook-config-file="+webhook,
		"--audit-webhook-mode="+cfg.AuditWebhookMode,
		"--audit-webhook-batch-max-wait=1s",
		"--audit-webhook-initial-backoff=2s",
		"--audit-log-path="+filepath.Join(p.Dir, AuditLogFile),
		"--audit-log-format=json",
	)
	if _, err := p.start("kube-apiserver", cfg.Detach, args...); err != nil {
		return err
	}
	fmt.Fprintf(p.log, "waiting for kube-apiserver %s/readyz\n", p.APIServerURL)
	return WaitFor(ctx, 120*time.Second, func() error { return p.readyz(p.APIServerURL) })
}

// StartPeerAPIServer starts one more kube-apiserver on the plane's etcd and PKI, as a second member of
// an HA control plane would run, with extra flags (no audit webhook: the plane's own kube-apiserver
// audits), and returns its URL once /readyz answers ok. Benchmarks use it for a reference configured
// differently, such as --watch-cache-sizes=configmaps#0 (ConfigMaps listed from etcd). Stop ends it
// with the rest; stop ends it alone.
func (p *Plane) StartPeerAPIServer(ctx context.Context, name string, extra ...string) (url string, stop func(), err error) {
	port, err := FreePort()
	if err != nil {
		return "", nil, err
	}
	cmd, err := p.start(name, false, append(p.apiServerArgs(port), extra...)...)
	if err != nil {
		return "", nil, err
	}
	stop = func() { stopProcess(cmd.Process.Pid) }
	url = fmt.Sprintf("https://127.0.0.1:%d", port)
	if err := WaitFor(ctx, 120*time.Second, func() error { return p.readyz(url) }); err != nil {
		stop()
		return "", nil, err
	}
	return url, stop, nil
}

// apiServerArgs is kube-apiserver's command line without auditing.
func (p *Plane) apiServerArgs(port int) []string {
	f := func(n string) string { return filepath.Join(p.pki(), n) }
	return []string{p.Bins.KubeAPIServer,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
		"--etcd-servers=" + p.etcdURL,
		"--tls-cert-file=" + f("apiserver.crt"), "--tls-private-key-file=" + f("apiserver.key"),
		"--client-ca-file=" + p.CA.CertFile,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f("sa.pub"), "--service-account-signing-key-file=" + f("sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--enable-aggregator-routing=false",
		"--proxy-client-cert-file=" + f("front-proxy-client.crt"), "--proxy-client-key-file=" + f("front-proxy-client.key"),
		"--requestheader-client-ca-file=" + p.FrontProxyCA.CertFile,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-uid-headers=X-Remote-Uid",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
	}
}

func (p *Plane) readyz(url string) error {
	caPEM, err := os.ReadFile(p.CA.CertFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(filepath.Join(p.pki(), "user-admin.crt"), filepath.Join(p.pki(), "user-admin.key"))
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	resp, err := c.Get(url + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s: %s", resp.Status, body)
	}
	return nil
}

// Stop ends the processes this Plane started (and only those).
func (p *Plane) Stop() {
	p.mu.Lock()
	procs := p.procs
	p.procs = nil
	p.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		stopProcess(procs[i].Process.Pid)
	}
}

// StopPIDFiles ends the processes whose pid files a detached Plane left in dir (the demo's "down").
func StopPIDFiles(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.pid"))
	if err != nil {
		return nil, err
	}
	var stopped []string
	for _, f := range files {
		var pid int
		data, err := os.ReadFile(f)
		if err != nil {
			return stopped, err
		}
		if _, err := fmt.Sscan(string(data), &pid); err != nil || pid <= 1 {
			continue
		}
		if stopProcess(pid) {
			stopped = append(stopped, fmt.Sprintf("%s (pid %d)", strings.TrimSuffix(filepath.Base(f), ".pid"), pid))
		}
		_ = os.Remove(f)
	}
	return stopped, nil
}

// stopProcess sends SIGTERM to the process group, then SIGKILL after 10 s.
func stopProcess(pid int) bool {
	if err := syscall.Kill(-pid, syscall.SIGTERM); err != nil {
		return false
	}
	// Poll until the process is gone: it may not be our child (the demo's "down"), so there is
	// nothing to wait on but its existence.
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		// Reap our own children so Kill(pid, 0) stops succeeding on a zombie.
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		return syscall.Kill(pid, 0) != nil, nil
	})
	if err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	return true
}

// WaitFor polls f every 250ms until it returns nil or timeout passes; the error names f's last error.
// The condition is the signal: callers poll an observable state, never the passing of time.
func WaitFor(ctx context.Context, timeout time.Duration, f func() error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		last = f()
		return last == nil, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("timed out after %s: %w", timeout, last)
	}
	return err
}
