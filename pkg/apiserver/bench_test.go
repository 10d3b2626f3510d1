package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/registry/access"
	"github.com/kubehistory/kubehistory/pkg/registry/history/changes"
)

type allowAll struct{}

func (allowAll) Authorize(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
	return authorizer.DecisionAllow, "", nil
}

// BenchmarkServeList500 is the server side of a list of 500 changes without the network: the REST
// storage's list (index, RBAC mirror, objects) and its encoding by the generic server's serializers,
// streaming as in k8s.io/apiserver. The changes are shaped as the e2e list benchmark's (ConfigMap
// creations of ~1 KiB, committed).
func BenchmarkServeList500(b *testing.B) {
	x, err := index.Open(filepath.Join(b.TempDir(), "index.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = x.Close() }()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	var batch []index.SeqRecord
	for i := 1; i <= 500; i++ {
		name := fmt.Sprintf("cm-%03d", i)
		batch = append(batch, index.SeqRecord{Seq: uint64(i), Record: change.Record{Fields: change.Fields{
			Object: change.Object{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespace: "bench", Name: name,
				UID: fmt.Sprintf("7dda3d23-b267-4bca-8175-%012d", i), ResourceVersion: fmt.Sprint(1000 + i)},
			Verb:       change.VerbCreate,
			Actor:      change.Actor{Username: "admin", Groups: []string{"system:masters", "system:authenticated"}, UserAgent: "kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07", SourceIPs: []string{"127.0.0.1"}},
			Source:     change.SourceAudit,
			AuditID:    fmt.Sprintf("b51d9646-b4f3-4aa4-8584-%012d", i),
			ChangeID:   fmt.Sprintf("c79c8173b80d54a5e66ae0fc9d93%04d", i),
			RequestURI: "/api/v1/namespaces/bench/configmaps?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
			ChangeTime: metav1.NewMicroTime(t0.Add(time.Duration(i) * time.Millisecond)),
			Git: change.GitLink{Destination: "main", DestinationNamespace: "bench", Repository: "file:///srv/git/bench.git", Branch: "main",
				Commit: fmt.Sprintf("522d864ff07936c9b5f4d1b1b80a391ccb3%05d", i), Path: "bench/core/configmaps/" + name + ".yaml"},
			Diff: fmt.Sprintf("diff --git a/bench/core/configmaps/%[1]s.yaml b/bench/core/configmaps/%[1]s.yaml\nnew file mode 100644\n--- /dev/null\n+++ b/bench/core/configmaps/%[1]s.yaml\n@@ -0,0 +1,10 @@\n+apiVersion: v1\n+data:\n+  config: %[2]s\n+  i: \"%[3]d\"\n+kind: ConfigMap\n+metadata:\n+  labels:\n+    app: bench\n+  name: %[1]s\n+  namespace: bench\n",
				name, strings.Repeat("key=value;", 100), i),
		}}})
	}
	if _, err := x.AddBatch(batch); err != nil {
		b.Fatal(err)
	}
	r := changes.NewResourceChanges(x, access.New(allowAll{}, access.DefaultTTL, access.DefaultCacheSize))
	ctx := genericapirequest.WithUser(genericapirequest.WithNamespace(context.Background(), "bench"), &user.DefaultInfo{Name: "admin"})
	codecs := serializer.NewCodecFactory(Scheme, serializer.WithStreamingCollectionEncodingToJSON(), serializer.WithStreamingCollectionEncodingToProtobuf())
	list := func(b *testing.B) runtime.Object {
		obj, err := r.List(ctx, &metainternalversion.ListOptions{Limit: 500})
		if err != nil {
			b.Fatal(err)
		}
		return obj
	}
	b.Run("list", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			list(b)
		}
	})
	for _, mediaType := range []string{runtime.ContentTypeProtobuf, runtime.ContentTypeJSON} {
		info, ok := runtime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), mediaType)
		if !ok {
			b.Fatalf("no serializer for %s", mediaType)
		}
		enc := codecs.EncoderForVersion(info.Serializer, historyv1alpha1.SchemeGroupVersion)
		b.Run("list+encode "+mediaType, func(b *testing.B) {
			b.ReportAllocs()
			var buf bytes.Buffer
			for i := 0; i < b.N; i++ {
				buf.Reset()
				if err := enc.Encode(list(b), &buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(buf.Len())/1024, "KiB")
		})
	}
}
