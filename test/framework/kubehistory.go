package framework

import (
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
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Kubectl is the real kubectl the tests drive.
var Kubectl = "/usr/bin/kubectl"

// KubectlRun runs kubectl with the kubeconfig and returns stdout; stderr is in the error.
func KubectlRun(ctx context.Context, kubeconfig string, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, Kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

var buildOnce sync.Mutex

// BuildKubehistory builds kubehistory-apiserver into dir and returns its path.
func BuildKubehistory(dir string, log io.Writer) (string, error) {
	buildOnce.Lock()
	defer buildOnce.Unlock()
	out := filepath.Join(dir, "kubehistory-apiserver")
	// KUBEHISTORY_BUILD_TAGS builds a deliberately broken binary for the reliability suite's negative run.
	cmd := exec.Command("go", "build", "-tags", os.Getenv("KUBEHISTORY_BUILD_TAGS"), "-o", out, "./cmd/kubehistory-apiserver")
	cmd.Dir = RepoRoot()
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building kubehistory-apiserver: %w", err)
	}
	return out, nil
}

// Kubehistory is a kubehistory-apiserver process wired into a Plane.
type Kubehistory struct {
	Plane    *Plane
	Dir      string
	CA       *CA
	Identity string // kubeconfig of kubehistory's own identity
	// Port and Cmd are those of the first replica, which the APIService points at.
	Port int
	Cmd  *exec.Cmd
	// Replicas are every kubehistory-apiserver process started, the first one included.
	Replicas []*Replica

	binary  string
	serving CertPair
	detach  bool
	extra   []string
}

// Replica is one kubehistory-apiserver process.
type Replica struct {
	Name      string
	Port      int
	AuditPort int
	DataDir   string
	Cmd       *exec.Cmd
	args      []string
}

// InstallOptions tune InstallKubehistory.
type InstallOptions struct {
	// Binary is a built kubehistory-apiserver; empty builds one.
	Binary string
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
	// Detach lets the process outlive the caller (the demo).
	Detach bool
	// AuditPort is the first replica's audit webhook port; 0 takes the plane's (where kube-apiserver
	// sends). Tests with several replicas put a Proxy on the plane's port instead.
	AuditPort int
}

// ServiceAccountUser is the username kubehistory authenticates as; the RBAC in artifacts/ names the
// ServiceAccount, which RBAC matches by this username, so a client certificate with this CN works.
const ServiceAccountUser = "system:serviceaccount:kubehistory-system:kubehistory-apiserver"

// InstallKubehistory applies artifacts/ (namespace, CRDs, RBAC, the local ExternalName Service), starts
// kubehistory-apiserver with a serving certificate from its own CA, waits for its /readyz, registers the
// APIService with that CA as caBundle and waits until the aggregator reports it Available.
func (p *Plane) InstallKubehistory(ctx context.Context, o InstallOptions) (*Kubehistory, error) {
	k := &Kubehistory{Plane: p, Dir: filepath.Join(p.Dir, "kubehistory")}
	if err := os.MkdirAll(k.Dir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if o.Binary == "" {
		if o.Binary, err = BuildKubehistory(k.Dir, p.log); err != nil {
			return nil, err
		}
	}
	if k.Port, err = FreePort(); err != nil {
		return nil, err
	}
	if k.CA, err = NewCA(p.pki(), "kubehistory-ca"); err != nil {
		return nil, err
	}
	serving, err := k.CA.Issue(p.pki(), "kubehistory-serving", CertOptions{
		CommonName: "kubehistory-apiserver", Server: true,
		DNSNames: []string{"kubehistory-apiserver.kubehistory-system.svc", "kubehistory-apiserver.kubehistory-system.svc.cluster.local", "localhost"},
		IPs:      []net.IP{net.ParseIP("127.0.0.1")},
	})
	if err != nil {
		return nil, err
	}
	if k.Identity, err = p.Kubeconfig(ServiceAccountUser, "system:serviceaccounts", "system:serviceaccounts:kubehistory-system"); err != nil {
		return nil, err
	}
	vars := map[string]string{"KUBEHISTORY_PORT": fmt.Sprint(k.Port)}
	for _, f := range []string{"rbac", "crds", "admission", "local/service.yaml"} {
		if err := p.ApplyArtifact(ctx, f, vars); err != nil {
			return nil, err
		}
	}
	// The shipped ClusterRole names only common resources; what the tests track beyond it is granted
	// the documented way, a second ClusterRole bound to the ServiceAccount.
	if _, err := KubectlRun(ctx, p.AdminKubeconfig, testExtraRBAC, "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
		return nil, err
	}
	if _, err := KubectlRun(ctx, p.AdminKubeconfig, trustedNamespacesConfigMap(), "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
		return nil, err
	}
	if err := waitForAdmission(ctx, p); err != nil {
		return nil, err
	}
	if err := WaitFor(ctx, 30*time.Second, func() error {
		_, err := KubectlRun(ctx, p.AdminKubeconfig, "", "wait", "--for=condition=Established", "--timeout=5s",
			"crd/watchrules.config.kubehistory.io", "crd/clusterwatchrules.config.kubehistory.io", "crd/gitdestinations.config.kubehistory.io")
		return err
	}); err != nil {
		return nil, err
	}
	k.binary, k.serving, k.detach, k.extra = o.Binary, serving, o.Detach, o.ExtraArgs
	auditPort := o.AuditPort
	if auditPort == 0 {
		auditPort = p.AuditPort
	}
	first, err := k.startReplica(ctx, "replica-0", k.Port, auditPort)
	if err != nil {
		return nil, err
	}
	k.Cmd = first.Cmd
	caPEM, err := os.ReadFile(k.CA.CertFile)
	if err != nil {
		return nil, err
	}
	vars["CA_BUNDLE"] = base64.StdEncoding.EncodeToString(caPEM)
	if err := p.ApplyArtifact(ctx, "apiservice.yaml", vars); err != nil {
		return nil, err
	}
	if err := WaitFor(ctx, 90*time.Second, func() error {
		_, err := KubectlRun(ctx, p.AdminKubeconfig, "", "wait", "--for=condition=Available", "--timeout=5s", "apiservice/v1alpha1.history.kubehistory.io")
		return err
	}); err != nil {
		return nil, err
	}
	return k, nil
}

// StartReplica starts one more kubehistory-apiserver with its own ports and data directory, sharing the
// serving certificate and identity, and waits for its /readyz.
func (k *Kubehistory) StartReplica(ctx context.Context, name string) (*Replica, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	auditPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	return k.startReplica(ctx, name, port, auditPort)
}

func (k *Kubehistory) startReplica(ctx context.Context, name string, port, auditPort int) (*Replica, error) {
	p := k.Plane
	r := &Replica{Name: name, Port: port, AuditPort: auditPort, DataDir: filepath.Join(k.Dir, "data-"+name)}
	if name == "replica-0" {
		r.DataDir = filepath.Join(k.Dir, "data")
	}
	r.args = append([]string{
		k.binary,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--tls-cert-file=" + k.serving.CertFile, "--tls-private-key-file=" + k.serving.KeyFile,
		"--kubeconfig=" + k.Identity,
		"--authentication-kubeconfig=" + k.Identity,
		"--authorization-kubeconfig=" + k.Identity,
		"--data-dir=" + r.DataDir,
		"--replica-id=" + name,
		fmt.Sprintf("--audit-port=%d", auditPort),
		"--audit-tls-cert-file=" + p.AuditServing.CertFile, "--audit-tls-private-key-file=" + p.AuditServing.KeyFile,
		"--audit-client-ca-file=" + p.AuditCA.CertFile,
		"--audit-allowed-names=" + p.AuditClientName,
	}, k.serverSecurityArgs()...)
	r.args = append(r.args, k.extra...)
	k.Replicas = append(k.Replicas, r)
	return r, k.Restart(ctx, r)
}

// Restart starts a replica's process (again, after Kill) with the same command line and waits for its
// /readyz.
func (k *Kubehistory) Restart(ctx context.Context, r *Replica) error {
	logName := "kubehistory-apiserver"
	if r.Name != "replica-0" {
		logName += "-" + r.Name
	}
	var err error
	if r.Cmd, err = k.Plane.start(logName, k.detach, r.args...); err != nil {
		return err
	}
	if err := WaitFor(ctx, 60*time.Second, func() error {
		_, err := KubectlRun(ctx, k.Plane.AdminKubeconfig, "", "get", "--raw", "/readyz", "--server", fmt.Sprintf("https://127.0.0.1:%d", r.Port),
			"--certificate-authority", k.CA.CertFile)
		return err
	}); err != nil {
		return fmt.Errorf("%s not ready (log %s): %w", r.Name, filepath.Join(k.Plane.Dir, logName+".log"), err)
	}
	// /readyz can pass before the front-proxy CA (read from kube-system's
	// extension-apiserver-authentication ConfigMap) is loaded; until then the aggregator's requests are
	// anonymous. Wait until a request as the aggregator makes it is served.
	if err := WaitFor(ctx, 30*time.Second, func() error { return k.frontProxyProbe(r) }); err != nil {
		return fmt.Errorf("%s does not accept the aggregator's requests yet: %w", r.Name, err)
	}
	return nil
}

func (k *Kubehistory) frontProxyProbe(r *Replica) error {
	_, err := k.aggregatorGet(context.Background(), r, "/apis/history.kubehistory.io/v1alpha1/resourcechanges?limit=1")
	return err
}

// aggregatorGet sends a GET to replica r as the aggregator would for an admin (front-proxy client
// certificate, X-Remote-User admin in system:masters) and returns the body of a 200 answer.
func (k *Kubehistory) aggregatorGet(ctx context.Context, r *Replica, path string) ([]byte, error) {
	pki := k.Plane.pki()
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "front-proxy-client.crt"), filepath.Join(pki, "front-proxy-client.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(k.CA.CertFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d%s", r.Port, path), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Remote-User", "admin")
	req.Header.Set("X-Remote-Group", "system:masters")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s on %s: %s", path, r.Name, resp.Status)
	}
	return body, nil
}

// Kill ends a replica with SIGKILL, as a crash would.
func (k *Kubehistory) Kill(r *Replica) {
	if r.Cmd != nil && r.Cmd.Process != nil {
		pid := r.Cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		// The process is reaped by the goroutine that started it: poll until it is gone (a process has
		// no event to wait on that is not its parent's).
		_ = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
			return syscall.Kill(pid, 0) != nil, nil
		})
	}
}

// ApplyArtifact applies a file or folder under artifacts/, replacing ${VAR} with vars.
func (p *Plane) ApplyArtifact(ctx context.Context, rel string, vars map[string]string) error {
	root := filepath.Join(RepoRoot(), "artifacts", rel)
	var files []string
	if st, err := os.Stat(root); err != nil {
		return err
	} else if st.IsDir() {
		if files, err = filepath.Glob(filepath.Join(root, "*.yaml")); err != nil {
			return err
		}
		// A folder's kustomization.yaml is for `kubectl apply -k`, not an object to apply.
		files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yaml" })
	} else {
		files = []string{root}
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		text := os.Expand(string(data), func(k string) string {
			if v, ok := vars[k]; ok {
				return v
			}
			return "${" + k + "}"
		})
		if strings.Contains(text, "${") {
			return fmt.Errorf("%s: unreplaced variable in %q", f, text)
		}
		if _, err := KubectlRun(ctx, p.AdminKubeconfig, text, "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
			return fmt.Errorf("applying %s: %w", f, err)
		}
	}
	return nil
}

// TrustedDestinationNamespaces are the namespaces whose GitDestinations the tests' ClusterWatchRules write
// to. One list feeds both the admission params ConfigMap and the server's --trusted-destination-namespaces,
// so the two layers of the same rule cannot drift apart in the tests.
var TrustedDestinationNamespaces = []string{"kubehistory-system", "team-a", "rules-test"}

// UntrustedProbeNamespace is never trusted; waitForAdmission uses it to see the policy enforced.
const UntrustedProbeNamespace = "kubehistory-untrusted-probe"

// testExtraRBAC grants kubehistory the test-only resources (the widgets CRD of the reconcile tests) with
// a second ClusterRole and binding, as docs/operations.md describes for operators.
const testExtraRBAC = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kubehistory:server-e2e-extra
rules:
- apiGroups: ["example.com"]
  resources: ["widgets"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubehistory:server-e2e-extra
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubehistory:server-e2e-extra"}
subjects:
- {kind: ServiceAccount, name: kubehistory-apiserver, namespace: kubehistory-system}
`

func trustedNamespacesConfigMap() string {
	return fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: kubehistory-admission, namespace: kubehistory-system}
data: {trustedDestinationNamespaces: %q}
`, strings.Join(TrustedDestinationNamespaces, ","))
}

// waitForAdmission waits until the admission policies are enforced: kube-apiserver compiles a new
// ValidatingAdmissionPolicy and its binding asynchronously, so a dry-run ClusterWatchRule aimed at an
// untrusted namespace is admitted until then and refused after.
func waitForAdmission(ctx context.Context, p *Plane) error {
	probe := fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: ClusterWatchRule
metadata: {name: admission-probe}
spec:
  destinationRef: {name: probe, namespace: %s}
  rules: [{apiGroups: [""], resources: ["namespaces"], scope: Cluster}]
`, UntrustedProbeNamespace)
	return WaitFor(ctx, 60*time.Second, func() error {
		out, err := KubectlRun(ctx, p.AdminKubeconfig, probe, "create", "--dry-run=server", "-f", "-")
		if err == nil {
			return fmt.Errorf("admission policy not yet enforced: %s", out)
		}
		if !strings.Contains(err.Error(), "trusted namespace") {
			return err
		}
		return nil
	})
}

// serverSecurityArgs are the flags the tests need from the server's tenancy hardening: file:// and
// http:// destinations (the tests' Git servers) and the trusted namespaces above.
func (k *Kubehistory) serverSecurityArgs() []string {
	return []string{
		"--allowed-url-schemes=https,ssh,http,file",
		"--trusted-destination-namespaces=" + strings.Join(TrustedDestinationNamespaces, ","),
	}
}
