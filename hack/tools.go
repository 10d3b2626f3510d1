//go:build tools

// Package tools pins the code generators hack/update-codegen.sh runs, at the k8s.io tag of go.mod.
package tools

import _ "k8s.io/code-generator"
