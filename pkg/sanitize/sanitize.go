// Package sanitize turns a Kubernetes object, as the audit webhook or the API server returned it, into
// the YAML that the Git writers commit: stable (sorted keys, no server-set fields that change on every
// write), re-appliable (apiVersion, kind, metadata.name/namespace kept) and safe (Secret values and the
// values of other sensitive resources replaced by sha256 hashes, so a change stays visible in the diff
// without the value ever reaching Git). The reconciler runs the same function on listed objects, so that
// Git and cluster compare equal when nothing changed.
package sanitize

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// HashPrefix starts every value that Sanitize replaced by its hash.
const HashPrefix = "sha256:"

// Options tune Sanitize for one object.
type Options struct {
	// KeepStatus keeps .status (a rule that tracks status asks for it).
	KeepStatus bool
	// Group and Resource of the object ("" and "secrets" for a core Secret). Sensitive resources are
	// matched on them; when Resource is empty only the object's kind is known and only Secrets (and the
	// kinds in SensitiveResources that happen to be written as a lower-case plural) are recognised.
	Group    string
	Resource string
	// SensitiveResources are further resources, as "resource.group" ("configmaps" for the core group),
	// whose data, stringData and binaryData values are hashed like a Secret's.
	SensitiveResources []string
}

// ErrNotObject is returned when the input is not a JSON object.
var ErrNotObject = errors.New("sanitize: input is not a JSON object")

// metadataNoise are the metadata fields the API server sets on every write. Keeping them would make
// every commit differ and the YAML impossible to re-apply elsewhere. deletionTimestamp is kept on
// purpose: an object that waits for finalizers is a change users want to see.
var metadataNoise = []string{
	"managedFields",
	"resourceVersion",
	"uid",
	"generation",
	"creationTimestamp",
	"selfLink",
	"deletionGracePeriodSeconds",
}

// annotationNoise are annotations written by clients or controllers that repeat the object or count
// its revisions: they are noise in a diff.
var annotationNoise = []string{
	"kubectl.kubernetes.io/last-applied-configuration",
	"deployment.kubernetes.io/revision",
}

// Sanitize returns the sanitized YAML of obj, which is a map[string]interface{} (as decoded from JSON
// or unstructured.Unstructured.Object), a JSON document as []byte or json.RawMessage. It never modifies
// obj and never panics; anything but a JSON object is an error.
func Sanitize(obj interface{}, opts Options) ([]byte, error) {
	var raw []byte
	switch o := obj.(type) {
	case []byte:
		raw = o
	case json.RawMessage:
		raw = o
	case string:
		raw = []byte(o)
	case map[string]interface{}:
		// A JSON round trip copies the map (so the caller's stays untouched) and normalises numbers.
		b, err := json.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("sanitize: encoding object: %w", err)
		}
		raw = b
	case nil:
		return nil, ErrNotObject
	default:
		return nil, fmt.Errorf("sanitize: unsupported input type %T", obj)
	}
	m, err := decode(raw)
	if err != nil {
		return nil, err
	}
	clean(m, opts)
	// UseNumber kept integers exact; json.Marshal writes json.Number verbatim.
	j, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("sanitize: encoding object: %w", err)
	}
	out, err := yaml.JSONToYAML(j)
	if err != nil {
		// YAML cannot hold some strings JSON can (control characters such as DEL in a key or a value
		// of a custom resource). JSON is YAML too and kubectl applies it: write the object as indented
		// JSON rather than fail to record it.
		var indented bytes.Buffer
		if ierr := json.Indent(&indented, j, "", "  "); ierr != nil {
			return nil, fmt.Errorf("sanitize: converting to YAML: %w", err)
		}
		indented.WriteByte('\n')
		return indented.Bytes(), nil
	}
	return out, nil
}

func decode(raw []byte) (map[string]interface{}, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v interface{}
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("sanitize: decoding JSON: %w", err)
	}
	// Trailing garbage means the input is not one document: refuse rather than guess.
	if dec.More() {
		return nil, fmt.Errorf("sanitize: decoding JSON: trailing data after the object")
	}
	m, ok := v.(map[string]interface{})
	if !ok {
		return nil, ErrNotObject
	}
	return m, nil
}

func clean(m map[string]interface{}, opts Options) {
	if !opts.KeepStatus {
		delete(m, "status")
	}
	if md, ok := m["metadata"].(map[string]interface{}); ok {
		for _, f := range metadataNoise {
			delete(md, f)
		}
		for _, key := range []string{"annotations", "labels"} {
			mm, ok := md[key].(map[string]interface{})
			if !ok {
				if md[key] == nil {
					delete(md, key)
				}
				continue
			}
			if key == "annotations" {
				for _, a := range annotationNoise {
					delete(mm, a)
				}
			}
			if len(mm) == 0 {
				delete(md, key)
			}
		}
	}
	if IsSensitive(m, opts) {
		hashValues(m, isSecret(m, opts))
	}
}

// IsSensitive says whether obj's values are hashed: every core Secret, and the resources listed in
// opts.SensitiveResources.
func IsSensitive(obj map[string]interface{}, opts Options) bool {
	if isSecret(obj, opts) {
		return true
	}
	group, resource := opts.Group, opts.Resource
	if resource == "" {
		// Without the resource only the kind is known; its lower-case plural is the usual resource name.
		kind, _ := obj["kind"].(string)
		if kind == "" {
			return false
		}
		resource = strings.ToLower(kind) + "s"
		group = apiGroup(obj)
	}
	want := resource
	if group != "" {
		want = resource + "." + group
	}
	for _, s := range opts.SensitiveResources {
		if strings.EqualFold(strings.TrimSpace(s), want) {
			return true
		}
	}
	return false
}

func isSecret(obj map[string]interface{}, opts Options) bool {
	if opts.Resource != "" {
		return opts.Group == "" && opts.Resource == "secrets"
	}
	kind, _ := obj["kind"].(string)
	return kind == "Secret" && apiGroup(obj) == ""
}

func apiGroup(obj map[string]interface{}) string {
	av, _ := obj["apiVersion"].(string)
	if i := strings.LastIndex(av, "/"); i >= 0 {
		return av[:i]
	}
	return ""
}

// hashValues replaces the values of data, stringData and binaryData by their sha256. A Secret's data
// and any binaryData are base64: the hash is of the decoded bytes, so that data and stringData holding
// the same value hash the same, and a value that is not valid base64 is hashed as it is.
func hashValues(obj map[string]interface{}, secret bool) {
	for _, field := range []string{"data", "stringData", "binaryData"} {
		values, ok := obj[field].(map[string]interface{})
		if !ok {
			if _, present := obj[field]; present && obj[field] != nil {
				// Not a map: no key structure to keep, so hide the whole value.
				obj[field] = hashOf(canonical(obj[field]))
			}
			continue
		}
		base64Values := field == "binaryData" || (secret && field == "data")
		keys := make([]string, 0, len(values))
		for k := range values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v := values[k]
			s, isString := v.(string)
			if !isString {
				values[k] = hashOf(canonical(v))
				continue
			}
			b := []byte(s)
			if base64Values {
				if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
					b = dec
				}
			}
			values[k] = hashOf(b)
		}
	}
}

func canonical(v interface{}) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(fmt.Sprint(v))
	}
	return b
}

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return HashPrefix + hex.EncodeToString(sum[:])
}
