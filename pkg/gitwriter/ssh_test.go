package gitwriter

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"k8s.io/apimachinery/pkg/api/meta"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
)

// sshdPath is where Debian's openssh-server puts the daemon; sshd must be started by absolute path
// (it re-executes itself for every connection).
const sshdPath = "/usr/sbin/sshd"

// sshServer is a real OpenSSH server on loopback, started by the test, that lets the current user in
// with userKey only. It has two host keys, ECDSA and Ed25519, like most real servers: a client that
// knows only one of them must negotiate that one.
type sshServer struct {
	user    string
	port    int
	ed25519 ssh.PublicKey // host keys
	ecdsa   ssh.PublicKey
	userKey []byte // the client's private key, OpenSSH PEM
	log     *syncBuffer
}

// knownHostsLine is the known_hosts entry of one of the server's host keys, in the form ssh-keyscan
// prints for a port other than 22.
func (s *sshServer) knownHostsLine(key ssh.PublicKey) string {
	return fmt.Sprintf("[127.0.0.1]:%d %s", s.port, bytes.TrimSpace(ssh.MarshalAuthorizedKey(key)))
}

// url is the ssh:// URL of a repository on this server, by absolute path.
func (s *sshServer) url(repo string) string {
	return fmt.Sprintf("ssh://%s@127.0.0.1:%d%s", s.user, s.port, repo)
}

// syncBuffer collects sshd's log for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// writeOpenSSHKey writes a private key in OpenSSH format, readable by sshd and by ssh.ParsePrivateKey.
func writeOpenSSHKey(t *testing.T, path string, key crypto.PrivateKey) []byte {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	data := pem.EncodeToMemory(block)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

func newEd25519(t *testing.T) (ssh.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sshPub, priv
}

// startSSHServer starts /usr/sbin/sshd -D -e on 127.0.0.1 with a configuration of its own in a temp
// dir and waits until it listens. The login shell runs git-upload-pack and git-receive-pack as any
// Git-over-SSH server does (no ForceCommand).
func startSSHServer(t *testing.T) *sshServer {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		t.Fatalf("%s is missing (%v): the SSH tests run a real OpenSSH server; install it with hack/install-test-deps.sh (as root: apt-get install openssh-server)", sshdPath, err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if u.Uid == "0" {
		// sshd running as root checks for its privilege separation directory (the package makes it at boot).
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("creating sshd's privilege separation directory: %v", err)
		}
	}
	dir := t.TempDir()
	s := &sshServer{user: u.Username, log: &syncBuffer{}}

	edPub, edPriv := newEd25519(t)
	writeOpenSSHKey(t, filepath.Join(dir, "host_ed25519"), edPriv)
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	writeOpenSSHKey(t, filepath.Join(dir, "host_ecdsa"), ecPriv)
	if s.ecdsa, err = ssh.NewPublicKey(&ecPriv.PublicKey); err != nil {
		t.Fatal(err)
	}
	s.ed25519 = edPub
	userPub, userPriv := newEd25519(t)
	s.userKey = writeOpenSSHKey(t, filepath.Join(dir, "user_ed25519"), userPriv)
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(userPub), 0o600); err != nil {
		t.Fatal(err)
	}

	// The port is picked free and then handed to sshd; if something takes it in between, sshd exits
	// without listening and we try another one.
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.port = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		conf := strings.Join([]string{
			fmt.Sprintf("ListenAddress 127.0.0.1:%d", s.port),
			"AddressFamily inet",
			"HostKey " + filepath.Join(dir, "host_ecdsa"),
			"HostKey " + filepath.Join(dir, "host_ed25519"),
			"PidFile " + filepath.Join(dir, "sshd.pid"),
			"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
			"AuthenticationMethods publickey",
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"UsePAM no",
			"StrictModes no", // the temp dir's modes are not sshd's business here
			"PermitRootLogin prohibit-password",
			"AllowUsers " + u.Username,
			"UseDNS no",
			"PrintMotd no",
			"LogLevel VERBOSE",
		}, "\n") + "\n"
		confPath := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		listening, exited, stop := runSSHD(t, confPath, s.log)
		select {
		case <-listening:
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("sshd log:\n%s", s.log.String())
				}
			})
			return s
		case err := <-exited:
			if attempt < 5 && strings.Contains(s.log.String(), "Bind to port") {
				continue
			}
			t.Fatalf("sshd exited before listening: %v\n%s", err, s.log.String())
		case <-time.After(60 * time.Second): // a guard against hanging, not a timing assertion
			stop()
			t.Fatalf("sshd did not report listening\n%s", s.log.String())
		}
	}
}

// runSSHD starts sshd in its own process group and returns a channel closed when it logs that it
// listens, one that receives its exit, and a function that ends it and every session it forked.
func runSSHD(t *testing.T, confPath string, log io.Writer) (<-chan struct{}, <-chan error, func()) {
	t.Helper()
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", confPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", sshdPath, err)
	}
	listening := make(chan struct{})
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		closed := false
		for sc.Scan() {
			fmt.Fprintln(log, sc.Text())
			if !closed && strings.Contains(sc.Text(), "Server listening on 127.0.0.1") {
				close(listening)
				closed = true
			}
		}
		// Wait only after stderr is drained (exec.Cmd's rule for StderrPipe).
		exited <- cmd.Wait()
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		})
	}
	return listening, exited, stop
}

// TestSSHRemote: a real change goes through the writer and is pushed over ssh:// to a real sshd,
// which runs git-receive-pack (and git-upload-pack for the writer's ls-remote and fetch). known_hosts
// holds only the server's Ed25519 key while the server also offers ECDSA (which Go's SSH client
// prefers): the writer must negotiate the key it can check. A commit pushed by someone else meanwhile
// is fetched over SSH and ours lands on top of it.
func TestSSHRemote(t *testing.T) {
	srv := startSSHServer(t)
	q := startJetStream(t)
	remote := bareRepo(t)
	cfg := testConfig(t, srv.url(remote))
	cfg.Credentials = Credentials{SSHPrivateKey: srv.userKey, KnownHosts: []byte(srv.knownHostsLine(srv.ed25519) + "\n")}
	startWriter(t, cfg, q, nil)

	c1 := mkChange("alice", "create", "configmaps", "team-a", "web", "1", map[string]interface{}{"data": map[string]interface{}{"num": "1"}})
	c2 := mkChange("bob", "update", "configmaps", "team-a", "web", "2", map[string]interface{}{"data": map[string]interface{}{"num": "2"}})
	publish(t, q, "", c1, c2)
	recs := waitRecords(t, q, 2)
	waitAcked(t, q)
	if log := gitCLI(t, remote, "--git-dir", remote, "log", "--format=%an <%ae>", "main"); log != "bob <bob@users.kubehistory.local>\nalice <alice@users.kubehistory.local>" {
		t.Fatalf("log over SSH:\n%s", log)
	}
	if c := gitCLI(t, remote, "--git-dir", remote, "log", "-1", "--format=%cn", "main"); c != DefaultCommitterName {
		t.Fatalf("committer %q", c)
	}
	head := gitCLI(t, remote, "--git-dir", remote, "rev-parse", "main")
	rec := recordByID(recs)[c2.ChangeID]
	if rec.Git.Commit != head || rec.Git.Repository != cfg.URL {
		t.Fatalf("record link %+v, remote head %s", rec.Git, head)
	}
	if got := gitCLI(t, remote, "--git-dir", remote, "show", "main:"+rec.Git.Path); !strings.Contains(got, `num: "2"`) {
		t.Fatalf("%s at main:\n%s", rec.Git.Path, got)
	}
	// sshd saw our key: the push did go over SSH, authenticated as the user.
	if !strings.Contains(srv.log.String(), "Accepted publickey for "+srv.user) {
		t.Fatalf("sshd accepted no public key:\n%s", srv.log.String())
	}

	// Someone else pushes; the writer's next push is refused as stale, it fetches over SSH and
	// rebuilds on top.
	co := checkout(t, remote)
	if err := os.WriteFile(filepath.Join(co, "README.md"), []byte("hand-written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitCLI(t, co, "add", "README.md")
	gitCLI(t, co, "commit", "-q", "-m", "human: add README")
	gitCLI(t, co, "push", "-q", "origin", "HEAD:main")
	theirs := gitCLI(t, co, "rev-parse", "HEAD")
	c3 := mkChange("carol", "update", "configmaps", "team-a", "web", "3", map[string]interface{}{"data": map[string]interface{}{"num": "3"}})
	publish(t, q, "", c3)
	waitRecords(t, q, 3)
	waitAcked(t, q)
	if log := gitCLI(t, remote, "--git-dir", remote, "log", "--format=%an", "main"); log != "carol\nsomeone\nbob\nalice" {
		t.Fatalf("log:\n%s", log)
	}
	if parent := gitCLI(t, remote, "--git-dir", remote, "rev-parse", "main^"); parent != theirs {
		t.Fatalf("our commit's parent %s, want theirs %s", parent, theirs)
	}
}

// TestSSHRemoteHostKeyChecked: known_hosts that does not vouch for the server (another key for the
// same host and port, or entries only for other hosts) fails the push with a host key error in
// RepoStatus, before authentication; nothing is pushed, recorded or acked. Then the right known_hosts
// (as ssh-keyscan prints it, both keys) lets the same backlog through.
func TestSSHRemoteHostKeyChecked(t *testing.T) {
	srv := startSSHServer(t)
	otherKey, _ := newEd25519(t)
	for _, tc := range []struct {
		name       string
		knownHosts string
		want       string
	}{
		{name: "another key for the host", knownHosts: srv.knownHostsLine(otherKey), want: "key mismatch"},
		{name: "the host is not listed", want: "key is unknown",
			knownHosts: fmt.Sprintf("[127.0.0.1]:%d %s\ngit.example.com %s", srv.port+1, bytes.TrimSpace(ssh.MarshalAuthorizedKey(srv.ed25519)), bytes.TrimSpace(ssh.MarshalAuthorizedKey(srv.ecdsa)))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := startJetStream(t)
			remote := bareRepo(t)
			cfg := testConfig(t, srv.url(remote))
			cfg.Credentials = Credentials{SSHPrivateKey: srv.userKey, KnownHosts: []byte(tc.knownHosts + "\n")}
			accepted := strings.Count(srv.log.String(), "Accepted publickey")
			w := startWriter(t, cfg, q, nil)
			c1 := mkChange("alice", "create", "configmaps", "team-a", "web", "1", map[string]interface{}{"data": map[string]interface{}{"num": "1"}})
			publish(t, q, "", c1)
			kv, err := q.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "the host key error in RepoStatus", func() bool {
				st, err := kv.Get(context.Background(), dest)
				return err == nil && st.LastError != "" && st.PendingChanges == 1 &&
					len(st.Conditions) == 1 && st.Conditions[0].Status == "False"
			})
			st, _ := kv.Get(context.Background(), dest)
			t.Logf("RepoStatus lastError: %s", st.LastError)
			if !strings.Contains(st.LastError, "host key") || !strings.Contains(st.LastError, tc.want) {
				t.Fatalf("last error %q: want a host key error (%s)", st.LastError, tc.want)
			}
			// The refusal is told by its type, through x/crypto/ssh's and go-git's wrapping.
			if c := meta.FindStatusCondition(st.Conditions, ConditionReady); c == nil || c.Reason != configv1alpha1.ReasonAuthenticationFailed {
				t.Fatalf("Ready %+v, want reason %s", c, configv1alpha1.ReasonAuthenticationFailed)
			}
			info, err := writerBacklog(q)
			if err != nil {
				t.Fatal(err)
			}
			if info.AckFloor != 0 || len(records(t, q)) != 0 {
				t.Fatalf("something was acked or recorded past a bad host key: ack floor %d", info.AckFloor)
			}
			if out := gitCLIAllowFail(remote, "--git-dir", remote, "rev-parse", "--verify", "-q", "main"); out != "" {
				t.Fatalf("branch exists after a refused host key: %s", out)
			}
			if n := gitCLI(t, remote, "--git-dir", remote, "count-objects"); !strings.HasPrefix(n, "0 objects") {
				t.Fatalf("objects landed in the repository: %s", n)
			}
			// The client stopped at the host key: it never authenticated.
			if got := strings.Count(srv.log.String(), "Accepted publickey"); got != accepted {
				t.Fatalf("sshd accepted a key from a client that should have refused its host key:\n%s", srv.log.String())
			}
			w.stop(t)

			// known_hosts as `ssh-keyscan -p <port> 127.0.0.1` prints it: the backlog goes through.
			cfg.Credentials.KnownHosts = []byte(srv.knownHostsLine(srv.ecdsa) + "\n" + srv.knownHostsLine(srv.ed25519) + "\n")
			startWriter(t, cfg, q, nil)
			waitRecords(t, q, 1)
			waitAcked(t, q)
			if log := gitCLI(t, remote, "--git-dir", remote, "log", "--format=%an", "main"); log != "alice" {
				t.Fatalf("log:\n%s", log)
			}
		})
	}
}

// TestSSHHostKeyAlgorithms: the writer offers exactly the host key types known_hosts lists for the
// destination's host and port (22 for scp-style URLs), RSA keys as their SHA-2 signature algorithms.
func TestSSHHostKeyAlgorithms(t *testing.T) {
	ed, _ := newEd25519(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPub, err := ssh.NewPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	line := func(host string, k ssh.PublicKey) string {
		return host + " " + string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(k)))
	}
	knownHosts := strings.Join([]string{
		line("git.example.com", ed),
		line("[git.example.com]:2222", ecPub),
		line("other.example.com", ecPub),
		line(knownhosts.HashHostname("hashed.example.com"), ed), // as `ssh-keyscan -H` writes it
	}, "\n") + "\n"
	_, userKey := newEd25519(t)
	block, err := ssh.MarshalPrivateKey(userKey, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		url  string
		want []string
	}{
		{url: "git@git.example.com:org/repo.git", want: []string{ssh.KeyAlgoED25519}},
		{url: "ssh://git@git.example.com/org/repo.git", want: []string{ssh.KeyAlgoED25519}},
		{url: "ssh://git@git.example.com:2222/org/repo.git", want: []string{ssh.KeyAlgoECDSA256}},
		{url: "git@hashed.example.com:org/repo.git", want: []string{ssh.KeyAlgoED25519}},
		{url: "ssh://git@unknown.example.com/org/repo.git", want: nil}, // Go's defaults; the callback refuses any key
	} {
		t.Run(tc.url, func(t *testing.T) {
			cfg := testConfig(t, tc.url)
			cfg.Credentials = Credentials{SSHPrivateKey: pem.EncodeToMemory(block), KnownHosts: []byte(knownHosts)}
			auth, err := cfg.authMethod()
			if err != nil {
				t.Fatal(err)
			}
			keys, ok := auth.(*gitssh.PublicKeys)
			if !ok {
				t.Fatalf("auth %T", auth)
			}
			if fmt.Sprint(keys.HostKeyAlgorithms) != fmt.Sprint(tc.want) {
				t.Fatalf("host key algorithms %v, want %v", keys.HostKeyAlgorithms, tc.want)
			}
			if keys.HostKeyCallback == nil {
				t.Fatal("no host key callback")
			}
		})
	}
}
