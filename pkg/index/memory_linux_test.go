package index

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// BenchmarkListMemory runs the lists of BenchmarkList500 (the indexed ones, then the scans by actor)
// and reports what they leave in memory: the process's resident set from /proc/self/status, and the
// index file's pages in the page cache (mincore), which bbolt's mapping reads through. The figures of
// docs/decisions.md ("Index memory") come from it.
func BenchmarkListMemory(b *testing.B) {
	path := benchIndexPath(b, benchSize(b))
	x, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	byActor := func(actor string) func(*Entry) (bool, error) {
		return func(e *Entry) (bool, error) { return e.Record.Actor.Username == actor, nil }
	}
	for i := 0; i < b.N; i++ {
		for _, o := range []ListOptions{
			{Namespace: "ns-7", ObjectName: "cm-3"},
			{Namespace: "ns-7"},
			{Namespace: "ns-7", Match: byActor("user-42")},
			{Match: byActor("user-42")},
		} {
			o.Limit = 500
			if res, err := x.List(o); err != nil || len(res.Items) == 0 {
				b.Fatalf("listed %d items: %v", len(res.Items), err)
			}
		}
	}
	st := procStatusMiB(b)
	for _, k := range []string{"VmRSS", "RssAnon", "RssFile", "VmHWM"} {
		b.ReportMetric(st[k], k+"-MiB")
	}
	b.ReportMetric(pageCacheMiB(b, path), "indexPageCache-MiB")
}

func procStatusMiB(b *testing.B) map[string]float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			if n, err := strconv.Atoi(f[1]); err == nil {
				m[strings.TrimSuffix(f[0], ":")] = float64(n) / 1024
			}
		}
	}
	return m
}

// pageCacheMiB is how much of the file at path is in the page cache, whoever mapped or read it.
func pageCacheMiB(b *testing.B, path string) float64 {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	defer syscall.Munmap(m)
	ps := os.Getpagesize()
	vec := make([]byte, (len(m)+ps-1)/ps)
	if _, _, e := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		b.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return float64(n*ps) / (1 << 20)
}
