package gitwriter

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/sanitize"
)

func recordByID(recs []change.Record) map[string]change.Record {
	m := map[string]change.Record{}
	for _, r := range recs {
		m[r.ChangeID] = r
	}
	return m
}

// TestActorsDeleteAndSecrets: two actors in one window make two commits with their names as authors,
// into an empty repository; a delete removes the file; Secret values never reach Git.
func TestActorsDeleteAndSecrets(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	cfg := testConfig(t, "file://"+remote)
	r := startWriter(t, cfg, q, nil)

	const secretValue = "correct-horse-battery-staple"
	web := mkChange("alice", "create", "configmaps", "team-a", "web", "100", map[string]interface{}{"data": map[string]interface{}{"color": "blue"}})
	api := mkChange("bob", "update", "configmaps", "team-a", "api", "101", map[string]interface{}{"data": map[string]interface{}{"port": "8080"}})
	db := mkChange("bob", "create", "secrets", "team-a", "db", "102", map[string]interface{}{
		"data": map[string]interface{}{"password": b64(secretValue)}, "stringData": map[string]interface{}{"token": secretValue}})
	publish(t, q, "", web, api, db)
	recs := waitRecords(t, q, 3)

	co := checkout(t, remote)
	log := gitCLI(t, co, "log", "--reverse", "--format=%an <%ae>|%cn|%s")
	want := "alice <alice@users.kubehistory.local>|kubehistory|alice: create configmaps team-a/web\n" +
		"bob <bob@users.kubehistory.local>|kubehistory|bob: update configmaps team-a/api, create secrets team-a/db"
	if log != want {
		t.Fatalf("log:\n%s\nwant:\n%s", log, want)
	}
	got, err := os.ReadFile(co + "/clusters/dev/team-a/core/configmaps/web.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "apiVersion: v1\ndata:\n  color: blue\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: team-a\n" {
		t.Fatalf("web.yaml:\n%s", got)
	}
	body := gitCLI(t, co, "log", "-1", "--format=%B")
	for _, want := range []string{gitrecord.TrailerChangeID + ": " + api.ChangeID, gitrecord.TrailerChangeID + ": " + db.ChangeID,
		gitrecord.TrailerAuditID + ": " + api.AuditID, gitrecord.TrailerActorGroups + ": system:authenticated, team-bob",
		gitrecord.TrailerObjectVersion + ": clusters/dev/team-a/core/secrets/db.yaml 102"} {
		if !strings.Contains(body, want) {
			t.Errorf("commit message lacks %q:\n%s", want, body)
		}
	}
	byID := recordByID(recs)
	head := gitCLI(t, co, "rev-parse", "HEAD")
	rec := byID[db.ChangeID]
	if rec.Git.Commit != head || rec.Git.Path != "clusters/dev/team-a/core/secrets/db.yaml" || rec.Git.Repository != "file://"+remote ||
		rec.Git.Branch != "main" || rec.Git.Destination != dest.Name || rec.Git.CommittedAt == nil {
		t.Errorf("bad git link %+v", rec.Git)
	}
	if !strings.Contains(byID[web.ChangeID].Diff, "+  color: blue\n") || !strings.Contains(byID[web.ChangeID].Diff, "--- /dev/null") {
		t.Errorf("bad diff:\n%s", byID[web.ChangeID].Diff)
	}

	del := mkChange("carol", "delete", "configmaps", "team-a", "web", "103", nil)
	upd := mkChange("bob", "update", "secrets", "team-a", "db", "104", map[string]interface{}{"data": map[string]interface{}{"password": b64(secretValue + "-2")}})
	publish(t, q, "", del, upd)
	recs = waitRecords(t, q, 5)
	gitCLI(t, co, "pull", "-q")
	if _, err := os.Stat(co + "/clusters/dev/team-a/core/configmaps/web.yaml"); !os.IsNotExist(err) {
		t.Fatalf("web.yaml still there: %v", err)
	}
	if got := gitCLI(t, co, "log", "-1", "--format=%an", "--", "clusters/dev/team-a/core/configmaps/web.yaml"); got != "carol" {
		t.Fatalf("file removed by %q, want carol", got)
	}
	if d := recordByID(recs)[del.ChangeID].Diff; !strings.Contains(d, "+++ /dev/null") || !strings.Contains(d, "-  color: blue") {
		t.Errorf("delete diff:\n%s", d)
	}
	// The secret's value is nowhere in the repository's history, base64 or plain.
	for _, v := range []string{secretValue, b64(secretValue), b64(secretValue + "-2")} {
		if out := gitGrepAll(t, co, v); out != "" {
			t.Fatalf("secret value %q found:\n%s", v, out)
		}
		if p := gitCLI(t, co, "log", "-p", "--all"); strings.Contains(p, v) {
			t.Fatalf("secret value %q in git log -p", v)
		}
		for _, rec := range recs {
			if strings.Contains(rec.Diff, v) {
				t.Fatalf("secret value in a record diff")
			}
		}
	}
	if !strings.Contains(gitCLI(t, co, "show", "HEAD:clusters/dev/team-a/core/secrets/db.yaml"), "password: hmac-sha256:"+testKey.ID()+":") {
		t.Fatal("secret not hashed")
	}
	waitAcked(t, q)
	r.stop(t)
	st, err := r.w.kv.Get(context.Background(), dest)
	if err != nil {
		t.Fatal(err)
	}
	if st.HeadCommit != gitCLI(t, co, "rev-parse", "HEAD") || st.CommittedChanges != 5 || st.LastError != "" || st.LastPushTime == nil ||
		st.Writer != "test-replica" || st.Repository != r.w.cfg.URL || len(st.Conditions) != 1 || st.Conditions[0].Status != "True" ||
		st.Conditions[0].Reason != "Pushed" || st.PendingChanges != 0 || st.OldestPendingTime != nil {
		t.Fatalf("status %+v", st)
	}
}

// gitGrepAll greps every revision for s; empty when nothing matches.
func gitGrepAll(t *testing.T, dir, s string) string {
	revs := strings.Fields(gitCLI(t, dir, "rev-list", "--all"))
	var out []string
	for _, rev := range revs {
		cmdOut := gitCLIAllowFail(dir, "grep", "-F", s, rev)
		if cmdOut != "" {
			out = append(out, cmdOut)
		}
	}
	return strings.Join(out, "\n")
}

// TestRedeliveryIsIdempotent: a change re-sent after its commit (past the JetStream duplicate
// window, hence another message) makes no second commit and its record reaches the index once.
func TestRedeliveryIsIdempotent(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	r := startWriter(t, testConfig(t, "file://"+remote), q, nil)
	c := mkChange("alice", "update", "configmaps", "team-a", "web", "7", map[string]interface{}{"data": map[string]interface{}{"a": "1"}})
	publish(t, q, "", c)
	waitRecords(t, q, 1)
	waitAcked(t, q)
	publish(t, q, "resent-", c)
	publish(t, q, "resent-again-", c)
	waitAcked(t, q)
	co := checkout(t, remote)
	if n := gitCLI(t, co, "rev-list", "--count", "HEAD"); n != "1" {
		t.Fatalf("%s commits, want 1", n)
	}
	r.stop(t)
	if recs := records(t, q); len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
}

// TestCrashBetweenPushAndAck: the writer dies after pushing, before publishing and acking; the
// restarted writer (with its data directory, or with a fresh one) neither loses nor doubles anything.
func TestCrashBetweenPushAndAck(t *testing.T) {
	for _, tc := range []struct {
		name        string
		loseDataDir bool
	}{{"same data dir", false}, {"data dir lost", true}} {
		t.Run(tc.name, func(t *testing.T) {
			q := startJetStream(t)
			remote := bareRepo(t)
			cfg := testConfig(t, "file://"+remote)
			cfg.AckWait = 1e9 // redelivery soon after the crash
			var crashes atomic.Int32
			cfg.Hooks.AfterPush = func() error {
				if crashes.Add(1) == 1 {
					return errors.New("simulated crash")
				}
				return nil
			}
			w, err := New(cfg, q, nil)
			if err != nil {
				t.Fatal(err)
			}
			chs := []change.Change{
				mkChange("alice", "create", "configmaps", "team-a", "web", "10", map[string]interface{}{"data": map[string]interface{}{"a": "1"}}),
				mkChange("bob", "create", "configmaps", "team-b", "api", "11", map[string]interface{}{"data": map[string]interface{}{"b": "2"}}),
			}
			publish(t, q, "", chs...)
			if err := w.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "simulated crash") {
				t.Fatalf("Run returned %v, want the simulated crash", err)
			}
			co := checkout(t, remote)
			if n := gitCLI(t, co, "rev-list", "--count", "HEAD"); n != "2" {
				t.Fatalf("%s commits pushed before the crash, want 2", n)
			}
			if recs := records(t, q); len(recs) != 0 {
				t.Fatalf("%d records published before the crash", len(recs))
			}
			if tc.loseDataDir {
				cfg.DataDir = t.TempDir()
			}
			publish(t, q, "", mkChange("alice", "update", "configmaps", "team-a", "web", "12", map[string]interface{}{"data": map[string]interface{}{"a": "3"}}))
			startWriter(t, cfg, q, nil)
			recs := waitRecords(t, q, 3)
			waitAcked(t, q)
			gitCLI(t, co, "pull", "-q")
			if n := gitCLI(t, co, "rev-list", "--count", "HEAD"); n != "3" {
				t.Fatalf("%s commits, want 3:\n%s", n, gitCLI(t, co, "log", "--format=%an %s"))
			}
			byID := recordByID(recs)
			if len(byID) != 3 || len(recs) != 3 {
				t.Fatalf("records %d (distinct %d), want 3", len(recs), len(byID))
			}
			first := strings.Fields(gitCLI(t, co, "rev-list", "--reverse", "HEAD"))
			if byID[chs[0].ChangeID].Git.Commit != first[0] || byID[chs[1].ChangeID].Git.Commit != first[1] {
				t.Fatalf("recovered records point at the wrong commits")
			}
			if d := byID[chs[0].ChangeID].Diff; !strings.Contains(d, "+  a: \"1\"") {
				t.Fatalf("recovered diff:\n%s", d)
			}
		})
	}
}

// TestOutOfOrderResourceVersions: an older state, in the same window or a later one, never
// overwrites a newer one; it still gets its record.
func TestOutOfOrderResourceVersions(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	startWriter(t, testConfig(t, "file://"+remote), q, nil)
	cm := func(user, verb, rv, v string) change.Change {
		var body map[string]interface{}
		if v != "" {
			body = map[string]interface{}{"data": map[string]interface{}{"v": v}}
		}
		return mkChange(user, verb, "configmaps", "team-a", "web", rv, body)
	}
	// Same window, reversed, and one by another actor in between.
	publish(t, q, "", cm("alice", "update", "30", "thirty"), cm("bob", "update", "25", "twenty-five"), cm("alice", "update", "20", "twenty"))
	waitRecords(t, q, 3)
	co := checkout(t, remote)
	show := func() string {
		return gitCLI(t, co, "show", "origin/main:clusters/dev/team-a/core/configmaps/web.yaml")
	}
	if !strings.Contains(show(), "v: thirty") {
		t.Fatalf("file regressed:\n%s", show())
	}
	// A later window with older states and an older delete.
	publish(t, q, "", cm("bob", "update", "29", "twenty-nine"), cm("carol", "delete", "28", ""))
	waitRecords(t, q, 5)
	gitCLI(t, co, "fetch", "-q")
	if !strings.Contains(show(), "v: thirty") {
		t.Fatalf("file regressed:\n%s", show())
	}
	// The real delete, then a late update from before it: the file stays deleted.
	publish(t, q, "", cm("carol", "delete", "30", ""))
	waitRecords(t, q, 6)
	publish(t, q, "", cm("bob", "update", "30", "thirty-again"))
	waitRecords(t, q, 7)
	gitCLI(t, co, "fetch", "-q")
	if out := gitCLI(t, co, "ls-tree", "-r", "--name-only", "origin/main"); strings.Contains(out, "web.yaml") {
		t.Fatalf("deleted file came back:\n%s", out)
	}
	// A recreation (newer resourceVersion) writes it again.
	publish(t, q, "", cm("alice", "create", "40", "new"))
	waitRecords(t, q, 8)
	gitCLI(t, co, "fetch", "-q")
	if !strings.Contains(show(), "v: new") {
		t.Fatalf("recreated file:\n%s", show())
	}
}

type fakeFetcher map[string]string

func (f fakeFetcher) Get(_ context.Context, group, version, resource, namespace, name string) ([]byte, bool, error) {
	b, ok := f[resource+"/"+namespace+"/"+name]
	return []byte(b), ok, nil
}

// TestChangesWithoutBody: the object is fetched at write time, or marked gone without a file change.
func TestChangesWithoutBody(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	f := fakeFetcher{"configmaps/team-a/web": `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"web","namespace":"team-a","resourceVersion":"55"},"data":{"x":"fetched"}}`}
	startWriter(t, testConfig(t, "file://"+remote), q, f)
	present := mkChange("alice", "patch", "configmaps", "team-a", "web", "", nil)
	present.Markers = []change.Marker{change.MarkerNoBody}
	gone := mkChange("bob", "patch", "configmaps", "team-a", "old", "", nil)
	publish(t, q, "", present, gone)
	byID := recordByID(waitRecords(t, q, 2))
	if m := byID[present.ChangeID].Markers; len(m) != 2 || m[0] != change.MarkerNoBody || m[1] != change.MarkerFetchedAtWriteTime {
		t.Fatalf("markers %v", m)
	}
	if m := byID[gone.ChangeID].Markers; len(m) != 1 || m[0] != change.MarkerObjectGone {
		t.Fatalf("markers %v", m)
	}
	if byID[gone.ChangeID].Diff != "" || byID[gone.ChangeID].Git.Commit == "" {
		t.Fatalf("gone record %+v", byID[gone.ChangeID])
	}
	co := checkout(t, remote)
	if out := gitCLI(t, co, "ls-tree", "-r", "--name-only", "HEAD"); out != "clusters/dev/team-a/core/configmaps/web.yaml" {
		t.Fatalf("files:\n%s", out)
	}
	if !strings.Contains(gitCLI(t, co, "log", "--format=%B"), gitrecord.TrailerMarker+": "+gone.ChangeID+" ObjectGone") {
		t.Fatal("marker trailer missing")
	}
}

// Changes matched without the object's labels (Metadata-level Secrets) go through the scope with the
// fetched object's labels: an unlabelled Secret's create, its delete and a gone object's change leave
// no record and no file; the labelled one is written, its values as keyed fingerprints.
func TestScopeAppliesSelectorToFetchedObjects(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	f := fakeFetcher{
		"secrets/team-a/plain":  `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"plain","namespace":"team-a","resourceVersion":"5"},"stringData":{"k":"plain-value-123"}}`,
		"secrets/team-a/picked": `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"picked","namespace":"team-a","resourceVersion":"6","labels":{"tracked":"true"}},"stringData":{"k":"picked-value-456"}}`,
	}
	cfg := testConfig(t, "file://"+remote)
	var asked []string
	cfg.Scope = func(d change.DestinationRef, obj change.Object, labels map[string]string, actor string) bool {
		asked = append(asked, obj.Name)
		return labels["tracked"] == "true"
	}
	startWriter(t, cfg, q, f)
	plainCreate := mkChange("alice", "create", "secrets", "team-a", "plain", "", nil)
	plainDelete := mkChange("alice", "delete", "secrets", "team-a", "plain", "", nil)
	goneCreate := mkChange("alice", "create", "secrets", "team-a", "gone", "", nil)
	picked := mkChange("alice", "create", "secrets", "team-a", "picked", "", nil)
	publish(t, q, "", plainCreate, plainDelete, goneCreate, picked)
	recs := waitRecords(t, q, 1)
	waitAcked(t, q)
	if len(recs) != 1 || recs[0].ChangeID != picked.ChangeID {
		t.Fatalf("records %+v, want only the labelled Secret's", recs)
	}
	co := checkout(t, remote)
	if out := gitCLI(t, co, "ls-tree", "-r", "--name-only", "HEAD"); out != "clusters/dev/team-a/core/secrets/picked.yaml" {
		t.Fatalf("files:\n%s", out)
	}
	if log := gitCLI(t, co, "log", "-p", "--format=%B"); strings.Contains(log, "plain") || strings.Contains(log, "picked-value-456") {
		t.Fatalf("Git names the unselected Secret or holds a value:\n%s", log)
	}
	if len(asked) < 3 {
		t.Fatalf("scope asked about %v", asked)
	}
}

// A body ingest redacted with fewer sensitive paths than the writer's configuration: the fingerprints
// ingest made are kept, the rest is completed before Git.
func TestWriterCompletesRedaction(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	cfg := testConfig(t, "file://"+remote)
	cfg.SensitivePaths = []string{"configmaps:data.token"}
	startWriter(t, cfg, q, nil)
	ch := mkChange("alice", "create", "configmaps", "team-a", "app", "3", map[string]interface{}{
		"data": map[string]interface{}{"token": "tok-value-789", "color": "blue"}})
	ch.RedactBody(func(change.DestinationRef) sanitize.Options {
		return sanitize.Options{Key: cfg.Key, SensitivePaths: []string{"configmaps:data.color"}}
	})
	if !ch.Redacted || strings.Contains(string(ch.Body), "blue") || !strings.Contains(string(ch.Body), "tok-value-789") {
		t.Fatalf("ingest-side redaction: redacted=%v body %s", ch.Redacted, ch.Body)
	}
	publish(t, q, "", ch)
	waitRecords(t, q, 1)
	co := checkout(t, remote)
	y := gitCLI(t, co, "show", "HEAD:clusters/dev/team-a/core/configmaps/app.yaml")
	want := "color: " + cfg.Key.Fingerprint([]byte("blue"))
	if strings.Contains(y, "tok-value-789") || !strings.Contains(y, "token: hmac-sha256:"+cfg.Key.ID()+":") || !strings.Contains(y, want) {
		t.Fatalf("file:\n%s", y)
	}
}
