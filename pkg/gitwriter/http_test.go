package gitwriter

import (
	"context"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// gitHTTPServer serves the bare repositories under root with `git http-backend` behind basic auth,
// on loopback. It returns the base URL and a counter of refused requests.
func gitHTTPServer(t *testing.T, root, user, password string) (string, *atomic.Int32) {
	t.Helper()
	backend := filepath.Join(gitCLI(t, root, "--exec-path"), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git-http-backend not available (it ships with git; .ci/run checks for it): %v", err)
	}
	var refused atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != password {
			refused.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		(&cgi.Handler{Path: backend, Root: "/git", Env: []string{
			"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "REMOTE_USER=" + u, "GIT_CONFIG_NOSYSTEM=1",
		}}).ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/git", &refused
}

// TestHTTPRemote: against a real smart-HTTP server with basic auth, a wrong password acks nothing and
// shows in RepoStatus; with the right one the backlog lands in order; a commit pushed by someone else
// meanwhile is kept and ours lands on top of it.
func TestHTTPRemote(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	gitCLI(t, remote, "config", "http.receivepack", "true")
	base, refused := gitHTTPServer(t, filepath.Dir(remote), "writer", "s3cret")
	cfg := testConfig(t, base+"/remote.git")
	cfg.Credentials = Credentials{Username: "writer", Password: "wrong"}

	w1 := startWriter(t, cfg, q, nil)
	c1 := mkChange("alice", "create", "configmaps", "team-a", "web", "1", map[string]interface{}{"data": map[string]interface{}{"num": "1"}})
	c2 := mkChange("bob", "update", "configmaps", "team-a", "web", "2", map[string]interface{}{"data": map[string]interface{}{"num": "2"}})
	publish(t, q, "", c1, c2)
	kv, err := q.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the push error in RepoStatus", func() bool {
		st, err := kv.Get(context.Background(), dest)
		return err == nil && st.LastError != "" && st.LastErrorTime != nil && st.PendingChanges == 2 &&
			len(st.Conditions) == 1 && st.Conditions[0].Status == "False"
	})
	st, _ := kv.Get(context.Background(), dest)
	if !strings.Contains(strings.ToLower(st.LastError), "auth") || strings.Contains(st.LastError, "wrong") {
		t.Fatalf("last error %q: want an authentication error without the password", st.LastError)
	}
	if refused.Load() == 0 {
		t.Fatal("the server refused nothing")
	}
	info, err := writerBacklog(q)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor != 0 || len(records(t, q)) != 0 {
		t.Fatalf("something was acked or recorded with a wrong password: ack floor %d", info.AckFloor)
	}
	if out := gitCLIAllowFail(remote, "rev-parse", "--verify", "-q", "main"); out != "" {
		t.Fatalf("branch exists after a refused push: %s", out)
	}
	w1.stop(t)

	// Fixed credentials: the same durable consumer and data directory, the backlog lands in order.
	cfg.Credentials.Password = "s3cret"
	startWriter(t, cfg, q, nil)
	waitRecords(t, q, 2)
	waitAcked(t, q)
	if log := gitCLI(t, remote, "log", "--format=%an", "main"); log != "bob\nalice" {
		t.Fatalf("log:\n%s", log)
	}
	eventually(t, "a healthy RepoStatus", func() bool {
		st, err := kv.Get(context.Background(), dest)
		return err == nil && st.LastError == "" && st.HeadCommit == gitCLI(t, remote, "rev-parse", "main") && st.CommittedChanges == 2
	})

	// Someone else pushes to the branch; the writer's next push is refused as stale, it fetches and
	// rebuilds its commit on top.
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
	recs := waitRecords(t, q, 3)
	waitAcked(t, q)
	if log := gitCLI(t, remote, "log", "--format=%an", "main"); log != "carol\nsomeone\nbob\nalice" {
		t.Fatalf("log:\n%s", log)
	}
	if parent := gitCLI(t, remote, "rev-parse", "main^"); parent != theirs {
		t.Fatalf("our commit's parent %s, want theirs %s", parent, theirs)
	}
	if got := gitCLI(t, remote, "show", "main:README.md"); got != "hand-written" {
		t.Fatalf("their file lost: %q", got)
	}
	rec := recordByID(recs)[c3.ChangeID]
	if rec.Git.Commit != gitCLI(t, remote, "rev-parse", "main") || rec.Git.Repository != cfg.URL {
		t.Fatalf("record link %+v", rec.Git)
	}
	if !strings.Contains(rec.Diff, "-  num: \"2\"\n+  num: \"3\"\n") {
		t.Fatalf("diff:\n%s", rec.Diff)
	}
}
