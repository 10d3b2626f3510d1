package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	versioned "github.com/kubehistory/kubehistory/pkg/generated/clientset/versioned"
	"github.com/kubehistory/kubehistory/test/framework"
)

// benchNS holds benchObjects ConfigMaps, each created once, so that it has as many recorded changes.
const (
	benchNS      = "bench-list"
	benchObjects = 500
)

var benchSetup struct {
	once sync.Once
	err  error
}

// setupBench creates benchNS with a destination, a rule for ConfigMaps and benchObjects ConfigMaps,
// and waits until every creation is listed as a change.
func setupBench(b *testing.B, hist *versioned.Clientset) {
	b.Helper()
	benchSetup.once.Do(func() {
		ctx := context.Background()
		admin := env.plane.AdminKubeconfig
		repo := filepath.Join(env.plane.Dir, benchNS+".git")
		if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", repo).CombinedOutput(); err != nil {
			benchSetup.err = fmt.Errorf("git init: %v: %s", err, out)
			return
		}
		setup := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: main, namespace: %[1]s}
spec:
  url: file://%[2]s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps, namespace: %[1]s}
spec:
  destinationRef: {name: main}
  rules: [{apiGroups: [""], resources: ["configmaps"]}]
`, benchNS, repo)
		if _, err := kubectlAs(admin, setup, "apply", "-f", "-"); err != nil {
			benchSetup.err = err
			return
		}
		if benchSetup.err = framework.WaitFor(ctx, 30*time.Second, func() error {
			out, err := kubectlAs(admin, "", "get", "gitdestination", "main", "-n", benchNS, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
			if err == nil && out != "True" {
				err = fmt.Errorf("GitDestination Ready=%q", out)
			}
			return err
		}); benchSetup.err != nil {
			return
		}
		if benchSetup.err = env.kh.WaitForRules(ctx, framework.Rule{Namespace: benchNS, Name: "configmaps"}); benchSetup.err != nil {
			return
		}
		var objs bytes.Buffer
		for i := 0; i < benchObjects; i++ {
			// ~1 KiB of data each, so that both lists carry realistic objects.
			fmt.Fprintf(&objs, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%03d, namespace: %s, labels: {app: bench}}\ndata: {i: \"%d\", config: %q}\n",
				i, benchNS, i, strings.Repeat("key=value;", 100))
		}
		if _, err := kubectlAs(admin, objs.String(), "apply", "-f", "-"); err != nil {
			benchSetup.err = err
			return
		}
		benchSetup.err = framework.WaitFor(ctx, 180*time.Second, func() error {
			l, err := hist.HistoryV1alpha1().ResourceChanges(benchNS).List(ctx, metav1.ListOptions{})
			if err == nil && len(l.Items) < benchObjects {
				err = fmt.Errorf("%d of %d changes recorded so far", len(l.Items), benchObjects)
			}
			return err
		})
	})
	if benchSetup.err != nil {
		b.Fatal(benchSetup.err)
	}
}

func adminConfig(b *testing.B) *rest.Config {
	b.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", env.plane.AdminKubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	// The client's rate limiter would otherwise dominate what is measured.
	cfg.QPS, cfg.Burst = 10000, 10000
	return cfg
}

var etcdPeer struct {
	once sync.Once
	url  string
	err  error
}

// etcdReference is a second kube-apiserver on the plane's etcd with the watch cache off for
// ConfigMaps, so that it lists them from etcd: the reference the history list is held to. It runs
// until the plane stops.
func etcdReference(b *testing.B) string {
	b.Helper()
	etcdPeer.once.Do(func() {
		etcdPeer.url, _, etcdPeer.err = env.plane.StartPeerAPIServer(context.Background(), "kube-apiserver-etcd-reference",
			"--watch-cache-sizes=configmaps#0")
	})
	if etcdPeer.err != nil {
		b.Fatal(etcdPeer.err)
	}
	return etcdPeer.url
}

// etcdConfigMapLists reads how many etcd lists of ConfigMaps the kube-apiserver of kc made so far.
func etcdConfigMapLists(b *testing.B, kc kubernetes.Interface) float64 {
	b.Helper()
	m, err := kc.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	const series = `etcd_request_duration_seconds_count{group="",operation="list",resource="configmaps"} `
	for _, line := range strings.Split(string(m), "\n") {
		if v, ok := strings.CutPrefix(line, series); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("%s: %v", line, err)
			}
			return n
		}
	}
	return 0
}

// BenchmarkList500ResourceChangesVsConfigMaps lists 500 ResourceChanges through the aggregator
// (kube-apiserver proxies to kubehistory-apiserver, which authorizes each item with a cached
// SubjectAccessReview and reads its bbolt index) and 500 ConfigMaps from kube-apiserver two ways: from
// etcd (a second kube-apiserver of the plane with ConfigMaps' watch cache off: the reference the issue
// names) and from the watch cache (kube-apiserver's default for a consistent list). One op lists each
// of the three in turn, so that all see the same machine load, each twice: as protobuf (what client-go's
// typed client asks kube-apiserver for by default for built-in types; the history client asks for it by
// ContentType) and as JSON. It reports the times and the ratios of the history list to each reference,
// protobuf to protobuf and JSON to JSON (target ≤ 1.0).
func BenchmarkList500ResourceChangesVsConfigMaps(b *testing.B) {
	cfg := adminConfig(b)
	// The history API serves protobuf too; a client asks for it as for any API (ContentType).
	protoCfg := rest.CopyConfig(cfg)
	protoCfg.ContentType = "application/vnd.kubernetes.protobuf"
	jsonCfg := rest.CopyConfig(cfg)
	jsonCfg.ContentType = "application/json"
	etcdURL := etcdReference(b)
	onEtcd := func(c *rest.Config) *rest.Config {
		c = rest.CopyConfig(c)
		c.Host = etcdURL
		return c
	}
	hist, err := versioned.NewForConfig(protoCfg)
	if err != nil {
		b.Fatal(err)
	}
	setupBench(b, hist)
	ctx := context.Background()
	opts := metav1.ListOptions{Limit: benchObjects}
	type list struct {
		name  string
		list  func() (int, error)
		spent time.Duration
	}
	var lists []*list
	for _, format := range []struct {
		suffix string
		cfg    *rest.Config
	}{{"", protoCfg}, {"-json", jsonCfg}} {
		h, err := versioned.NewForConfig(format.cfg)
		if err != nil {
			b.Fatal(err)
		}
		kube, err := kubernetes.NewForConfig(format.cfg)
		if err != nil {
			b.Fatal(err)
		}
		kubeEtcd, err := kubernetes.NewForConfig(onEtcd(format.cfg))
		if err != nil {
			b.Fatal(err)
		}
		lists = append(lists,
			&list{name: "rc" + format.suffix, list: func() (int, error) {
				l, err := h.HistoryV1alpha1().ResourceChanges(benchNS).List(ctx, opts)
				return len(l.Items), err
			}},
			&list{name: "cm-etcd" + format.suffix, list: func() (int, error) {
				l, err := kubeEtcd.CoreV1().ConfigMaps(benchNS).List(ctx, opts)
				return len(l.Items), err
			}},
			&list{name: "cm" + format.suffix, list: func() (int, error) {
				l, err := kube.CoreV1().ConfigMaps(benchNS).List(ctx, opts)
				return len(l.Items), err
			}})
	}
	etcdAdmin, err := kubernetes.NewForConfig(onEtcd(cfg))
	if err != nil {
		b.Fatal(err)
	}
	etcdBefore := etcdConfigMapLists(b, etcdAdmin)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, l := range lists {
			start := time.Now()
			n, err := l.list()
			l.spent += time.Since(start)
			if err != nil || n != benchObjects {
				b.Fatalf("%s: %d items, %v", l.name, n, err)
			}
		}
	}
	b.StopTimer()
	spent := map[string]time.Duration{}
	for _, l := range lists {
		spent[l.name] = l.spent
		b.ReportMetric(float64(l.spent.Microseconds())/1000/float64(b.N), l.name+"-ms/list")
	}
	// The reference must really have read etcd: one etcd list per ConfigMap list.
	if read := etcdConfigMapLists(b, etcdAdmin) - etcdBefore; read < float64(2*b.N) {
		b.Fatalf("the etcd reference made %v etcd lists of ConfigMaps for %d lists", read, 2*b.N)
	}
	b.ReportMetric(float64(spent["rc"])/float64(spent["cm-etcd"]), "ratio-etcd")
	b.ReportMetric(float64(spent["rc-json"])/float64(spent["cm-etcd-json"]), "ratio-etcd-json")
	b.ReportMetric(float64(spent["rc"])/float64(spent["cm"]), "ratio-cache")
	b.ReportMetric(float64(spent["rc-json"])/float64(spent["cm-json"]), "ratio-cache-json")

	// Where the time goes: the same list straight from the replica (no aggregator hop).
	direct := rest.CopyConfig(protoCfg)
	direct.Host = fmt.Sprintf("https://127.0.0.1:%d", env.kh.Port)
	direct.TLSClientConfig.CAData, direct.TLSClientConfig.CAFile = nil, env.kh.CA.CertFile
	direct.TLSClientConfig.ServerName = "localhost"
	dh, err := versioned.NewForConfig(direct)
	if err != nil {
		b.Fatal(err)
	}
	var tDirect time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := dh.HistoryV1alpha1().ResourceChanges(benchNS).List(ctx, opts); err != nil {
			b.Fatal(err)
		}
		tDirect += time.Since(start)
	}
	b.ReportMetric(float64(tDirect.Microseconds())/1000/float64(b.N), "rc-direct-ms/list")
	// The size of each answer before compression.
	for _, format := range []struct{ name, accept string }{{"pb", "application/vnd.kubernetes.protobuf"}, {"json", "application/json"}} {
		rcRaw, err := hist.HistoryV1alpha1().RESTClient().Get().AbsPath("/apis/history.kubehistory.io/v1alpha1/namespaces/"+benchNS+"/resourcechanges").
			Param("limit", "500").SetHeader("Accept", format.accept).DoRaw(ctx)
		if err != nil {
			b.Fatal(err)
		}
		cmRaw, err := etcdAdmin.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/"+benchNS+"/configmaps").
			Param("limit", "500").SetHeader("Accept", format.accept).DoRaw(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(rcRaw))/1024, "rc-"+format.name+"-KiB")
		b.ReportMetric(float64(len(cmRaw))/1024, "cm-"+format.name+"-KiB")
	}
}

// benchIndex1M is the 1,000,000-change index that pkg/index's benchmarks build and cache (see
// benchIndexPath there; "v3" is its data shape).
func benchIndex1M() string {
	return filepath.Join(os.TempDir(), "kubehistory-index-bench", "v3-1000000", "index.db")
}

// BenchmarkServeIndex1MRSS starts one more kubehistory-apiserver on a copy of the cached index of
// 1,000,000 changes, lists 500 changes the ways users do (by namespace, by object name, by actor in a
// namespace and across all, a few pages with continue), and reports the process's resident memory
// from /proc/<pid>/status (target VmRSS < 256 MiB) with the time of each list.
func BenchmarkServeIndex1MRSS(b *testing.B) {
	src := benchIndex1M()
	if _, err := os.Stat(src); err != nil {
		b.Skipf("no cached 1M index (%v): run go test ./pkg/index -run '^$' -bench BenchmarkList500 first", err)
	}
	ctx := context.Background()
	kh := env.kh
	const name = "rss1m"
	dataDir := filepath.Join(kh.Dir, "data-"+name) // where StartReplica puts a replica's data
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		b.Fatal(err)
	}
	if err := copyFile(src, filepath.Join(dataDir, "index.db")); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dataDir)
	r, err := kh.StartReplica(ctx, name)
	if err != nil {
		b.Fatal(err)
	}
	defer kh.Kill(r)
	pid := r.Cmd.Process.Pid
	cfg := adminConfig(b)
	cfg.Host = fmt.Sprintf("https://127.0.0.1:%d", r.Port)
	cfg.TLSClientConfig.CAData, cfg.TLSClientConfig.CAFile = nil, kh.CA.CertFile
	cfg.TLSClientConfig.ServerName = "localhost"
	hist, err := versioned.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	rc := hist.HistoryV1alpha1()
	idle := procStatus(b, pid)
	lists := []struct {
		name string
		do   func() (int, error)
	}{
		{"namespace", func() (int, error) {
			l, err := rc.ResourceChanges("ns-7").List(ctx, metav1.ListOptions{Limit: 500})
			return len(l.Items), err
		}},
		{"objectName", func() (int, error) {
			l, err := rc.ResourceChanges("ns-7").List(ctx, metav1.ListOptions{Limit: 500, FieldSelector: "object.name=cm-3"})
			return len(l.Items), err
		}},
		{"actorInNamespace", func() (int, error) {
			l, err := rc.ResourceChanges("ns-7").List(ctx, metav1.ListOptions{Limit: 500, FieldSelector: "actor=user-42"})
			return len(l.Items), err
		}},
		{"actorAllNamespaces", func() (int, error) {
			l, err := rc.ResourceChanges("").List(ctx, metav1.ListOptions{Limit: 500, FieldSelector: "actor=user-42"})
			return len(l.Items), err
		}},
		{"pages5", func() (int, error) {
			n, cont := 0, ""
			for p := 0; p < 5; p++ {
				l, err := rc.ResourceChanges("ns-42").List(ctx, metav1.ListOptions{Limit: 500, Continue: cont})
				if err != nil {
					return n, err
				}
				n, cont = n+len(l.Items), l.Continue
			}
			return n, nil
		}},
	}
	spent := make([]time.Duration, len(lists))
	run := func(indexed bool) {
		for i := 0; i < b.N; i++ {
			for j, l := range lists {
				if strings.HasPrefix(l.name, "actor") == indexed {
					continue
				}
				start := time.Now()
				n, err := l.do()
				spent[j] += time.Since(start)
				if err != nil || n == 0 {
					b.Fatalf("%s: %d items, %v", l.name, n, err)
				}
			}
		}
	}
	b.ResetTimer()
	// First the lists the secondary indexes serve, then those that decode every entry of their scope
	// (actor is not indexed): they touch far more of the file.
	run(true)
	ix := procStatus(b, pid)
	run(false)
	b.StopTimer()
	st := procStatus(b, pid)
	b.ReportMetric(ix["VmRSS"], "VmRSS-indexed-MiB")
	b.ReportMetric(ix["RssFile"], "RssFile-indexed-MiB")
	for j, l := range lists {
		b.ReportMetric(float64(spent[j].Microseconds())/1000/float64(b.N), l.name+"-ms")
	}
	b.ReportMetric(st["VmRSS"], "VmRSS-MiB")
	b.ReportMetric(st["RssAnon"], "RssAnon-MiB")
	b.ReportMetric(st["RssFile"], "RssFile-MiB")
	b.ReportMetric(st["VmHWM"], "VmHWM-MiB")
	b.Logf("idle after start: VmRSS %.0f MiB (anon %.0f, file %.0f); after the indexed lists: VmRSS %.0f MiB (anon %.0f, file %.0f); after the actor scans too: VmRSS %.0f MiB (anon %.0f, file %.0f), peak %.0f MiB",
		idle["VmRSS"], idle["RssAnon"], idle["RssFile"], ix["VmRSS"], ix["RssAnon"], ix["RssFile"], st["VmRSS"], st["RssAnon"], st["RssFile"], st["VmHWM"])
}

// procStatus reads the memory lines of /proc/<pid>/status, in MiB.
func procStatus(b *testing.B, pid int) map[string]float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(data), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(value)
		if len(f) == 2 && f[1] == "kB" {
			if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[key] = kb / 1024
			}
		}
	}
	return out
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
