#!/usr/bin/env bash
# Runs every benchmark docs/benchmarks.md reports, in the order of the document, and keeps each output
# under $OUT (default .bench/<commit>/). The figures in docs/benchmarks.md name the commit they were
# measured at; hack/verify-benchmarks.sh fails when the code under a figure changed since.
#   hack/bench.sh                 # everything (~30 minutes on 2 cores; builds the control plane once)
#   hack/bench.sh writer ingest   # only some: writer ingest index apiserver list rss
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
commit=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain -- '*.go' go.mod go.sum)" ]; then
  echo "bench.sh: the working tree has uncommitted Go changes; figures must name a commit" >&2
  exit 1
fi
OUT=${OUT:-.bench/$commit}
mkdir -p "$OUT"
GO=${GO:-go}
run() {
  local name=$1; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$OUT/$name.txt"
}
want() { [ $# -eq 0 ] || [[ " ${SELECTED} " == *" $1 "* ]]; }
SELECTED="$*"
if [ -z "$SELECTED" ] || want writer; then
  run writer-commit $GO test ./pkg/gitwriter/ -run '^$' -bench 'BenchmarkCommit' -benchtime 5x
  run writer-throughput $GO test ./pkg/gitwriter/ -run '^$' -bench 'BenchmarkWriterThroughput' -benchtime 5x
fi
if [ -z "$SELECTED" ] || want ingest; then
  run ingest-vs-raw $GO test ./pkg/ingest/ -run '^$' -bench 'BenchmarkIngestVsRaw400' -benchtime 400x -count 3
  run ingest-alone $GO test ./pkg/ingest/ -run '^$' -benchmem -bench 'BenchmarkIngest400$|BenchmarkRawJetStreamPublish400|BenchmarkDecodeEventList400|BenchmarkMapAndEncode400' -benchtime 3s
fi
if [ -z "$SELECTED" ] || want index; then
  run index-add $GO test ./pkg/index/ -run '^$' -bench 'BenchmarkAdd$|BenchmarkAddBatch100' -benchtime 2000x
  run index-list $GO test ./pkg/index/ -run '^$' -bench 'BenchmarkList500/(objectName|namespace|actorInNamespace)' -benchtime 100x
  run index-list-all $GO test ./pkg/index/ -run '^$' -bench 'BenchmarkList500/actorAllNamespaces' -benchtime 10x
fi
if [ -z "$SELECTED" ] || want apiserver; then
  run serve-list $GO test ./pkg/apiserver/ -run '^$' -benchmem -bench BenchmarkServeList500 -benchtime 200x
fi
if [ -z "$SELECTED" ] || want list; then
  run list-vs-configmaps $GO test ./test/e2e/ -run '^$' -bench BenchmarkList500ResourceChangesVsConfigMaps -benchtime 30x -count 3 -timeout 60m
fi
if [ -z "$SELECTED" ] || want rss; then
  run rss $GO test ./test/e2e/ -run '^$' -bench BenchmarkServeIndex1MRSS -benchtime 30x -v -timeout 60m
fi
echo "outputs in $OUT (commit $commit)"
