// Package sanitize turns a Kubernetes object, as the audit webhook or the API server returned it, into
// the YAML that the Git writers commit: stable (sorted keys, no server-set fields that change on every
// write), re-appliable (apiVersion, kind, metadata.name/namespace kept) and safe (Secret values, the
// values of other sensitive resources and sensitive JSON paths replaced by keyed fingerprints
// (HMAC-SHA256 under the installation key), so a change stays visible in the diff without the value,
// or anything that could reverse it, ever reaching Git).
//
// Redact is the part of Sanitize that makes an object safe to store at all: ingest and the reconciler
// run it on every body before publishing, so that no Secret value reaches JetStream either.
package sanitize

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kubehistory/kubehistory/pkg/installkey"
)

// HashPrefix starts every value that Sanitize replaced by its fingerprint.
const HashPrefix = installkey.FingerprintPrefix

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
	// SensitivePaths are further values, as "resource.group:path.to.field" ("*" for any resource,
	// "configmaps:data.password" for the core group), replaced by their fingerprint; a path segment "*"
	// stands for every key of a map or every element of a list.
	SensitivePaths []string
	// StripAnnotations are removed beside the built-in ones (annotations that copy the object).
	StripAnnotations []string
	// Key makes the fingerprints. Sanitizing a sensitive object without it is an error.
	Key installkey.Key
	// encrypt leaves a Secret's values in place for CleanForEncryption's caller; never set otherwise.
	encrypt bool
	// Redacted says that Redact already ran on this body: values that are fingerprints under Key are
	// kept as they are instead of being fingerprinted again; every other sensitive value is still
	// replaced, so a body redacted with fewer sensitive resources or paths is completed here.
	Redacted bool
}

// ErrNotObject is returned when the input is not a JSON object.
var ErrNotObject = errors.New("sanitize: input is not a JSON object")

// ErrNoKey is returned for a sensitive object when Options.Key is not set: values are never hashed
// without the installation key.
var ErrNoKey = errors.New("sanitize: a sensitive object needs the installation key")

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
	if err := clean(m, opts); err != nil {
		return nil, err
	}
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

func clean(m map[string]interface{}, opts Options) error {
	if !opts.KeepStatus {
		delete(m, "status")
	}
	if md, ok := m["metadata"].(map[string]interface{}); ok {
		for _, f := range metadataNoise {
			delete(md, f)
		}
		for _, key := range []string{"annotations", "labels"} {
			if mm, ok := md[key].(map[string]interface{}); ok {
				if key == "annotations" {
					stripAnnotations(mm, opts)
				}
				if len(mm) > 0 {
					continue
				}
			} else if md[key] != nil {
				continue
			}
			delete(md, key)
		}
	}
	_, err := redactValues(m, opts)
	return err
}

// AppliesTo says whether objects of group/resource have anything sensitive under opts: every core
// Secret, the SensitiveResources, and the resources a SensitivePath names (or "*").
func (o Options) AppliesTo(group, resource string) bool {
	if group == "" && resource == "secrets" {
		return true
	}
	want := resource
	if group != "" {
		want = resource + "." + group
	}
	for _, s := range o.SensitiveResources {
		if strings.EqualFold(strings.TrimSpace(s), want) {
			return true
		}
	}
	for _, sp := range o.SensitivePaths {
		res, _, _ := strings.Cut(strings.TrimSpace(sp), ":")
		if res == "*" || strings.EqualFold(res, want) {
			return true
		}
	}
	return false
}

// CleanForEncryption is Sanitize for a destination that encrypts Secrets (SOPS): the cleaned object, as a
// map for the encoder, with a Secret's data and stringData values left in place for the caller to
// encrypt before anything is stored; sensitive paths and other sensitive resources are fingerprinted as
// always.
func CleanForEncryption(raw []byte, opts Options) (map[string]interface{}, error) {
	m, err := decode(raw)
	if err != nil {
		return nil, err
	}
	opts.encrypt = true
	opts.Redacted = false
	if err := clean(m, opts); err != nil {
		return nil, err
	}
	return m, nil
}

// Redact returns the JSON object raw with every sensitive value replaced by its fingerprint and the
// annotations that copy the object (kubectl's last-applied-configuration, which holds a Secret's values
// in plaintext, and opts.StripAnnotations) removed; everything else, metadata included, is kept.
// redacted says whether anything sensitive was replaced. A body that is not a JSON object is an error:
// the caller drops it rather than store what it cannot inspect.
func Redact(raw []byte, opts Options) (out []byte, redacted bool, err error) {
	m, err := decode(raw)
	if err != nil {
		return nil, false, err
	}
	if md, ok := m["metadata"].(map[string]interface{}); ok {
		if mm, ok := md["annotations"].(map[string]interface{}); ok {
			stripAnnotations(mm, opts)
		}
	}
	sensitive, err := redactValues(m, opts)
	if err != nil {
		return nil, false, err
	}
	out, err = json.Marshal(m)
	if err != nil {
		return nil, false, fmt.Errorf("sanitize: encoding object: %w", err)
	}
	return out, sensitive, nil
}

func stripAnnotations(annotations map[string]interface{}, opts Options) {
	for _, a := range annotationNoise {
		delete(annotations, a)
	}
	for _, a := range opts.StripAnnotations {
		delete(annotations, strings.TrimSpace(a))
	}
}

// redactValues replaces the values of a sensitive resource and of the sensitive paths by fingerprints.
// It reports whether anything of the object is sensitive.
func redactValues(m map[string]interface{}, opts Options) (bool, error) {
	paths := matchingPaths(m, opts)
	secret := IsSensitive(m, opts) && !(opts.encrypt && isSecret(m, opts))
	if !secret && len(paths) == 0 {
		return false, nil
	}
	if opts.Key.IsZero() {
		return false, ErrNoKey
	}
	f := fingerprinter{key: opts.Key, keep: opts.Redacted}
	if secret {
		hashValues(m, isSecret(m, opts), f)
	}
	for _, p := range paths {
		redactPath(m, p, f)
	}
	return true, nil
}

// fingerprinter replaces values by their fingerprints; with keep, a value that already is a fingerprint
// under the key (Redact made it) stays as it is.
type fingerprinter struct {
	key  installkey.Key
	keep bool
}

// value fingerprints a value at a sensitive path: a string as its text, anything else as its JSON.
func (f fingerprinter) value(v interface{}) interface{} {
	if s, ok := v.(string); ok {
		if f.keep && f.own(s) {
			return s
		}
		return f.key.Fingerprint([]byte(s))
	}
	return f.key.Fingerprint(canonical(v))
}

// whole fingerprints v as its JSON (a value with no key structure to keep).
func (f fingerprinter) whole(v interface{}) interface{} {
	if s, ok := v.(string); ok && f.keep && f.own(s) {
		return s
	}
	return f.key.Fingerprint(canonical(v))
}

func (f fingerprinter) own(s string) bool {
	return installkey.IsFingerprint(s) && strings.HasPrefix(s, installkey.FingerprintPrefix+f.key.ID()+":")
}

// matchingPaths returns the field paths of opts.SensitivePaths that apply to the object.
func matchingPaths(obj map[string]interface{}, opts Options) [][]string {
	if len(opts.SensitivePaths) == 0 {
		return nil
	}
	want := resourceName(obj, opts)
	var out [][]string
	for _, sp := range opts.SensitivePaths {
		res, path, ok := strings.Cut(strings.TrimSpace(sp), ":")
		if !ok || path == "" {
			continue
		}
		if res != "*" && !strings.EqualFold(res, want) {
			continue
		}
		out = append(out, strings.Split(path, "."))
	}
	return out
}

// ValidatePath checks one sensitive path ("resource.group:field.path") for flags and specs.
func ValidatePath(sp string) error {
	res, path, ok := strings.Cut(sp, ":")
	if !ok || res == "" || path == "" {
		return fmt.Errorf("sensitive path %q: want resource.group:field.path (\"*\" for any resource)", sp)
	}
	for _, seg := range strings.Split(path, ".") {
		if seg == "" {
			return fmt.Errorf("sensitive path %q: empty segment", sp)
		}
	}
	if path == "metadata" || strings.HasPrefix(path, "metadata.name") || path == "apiVersion" || path == "kind" {
		return fmt.Errorf("sensitive path %q: the object's identity cannot be hidden", sp)
	}
	return nil
}

// redactPath replaces the value(s) at path (a "*" segment: every key or element) by fingerprints.
func redactPath(v interface{}, path []string, f fingerprinter) interface{} {
	if len(path) == 0 {
		if v == nil {
			return nil
		}
		return f.value(v)
	}
	seg, rest := path[0], path[1:]
	switch c := v.(type) {
	case map[string]interface{}:
		if seg == "*" {
			for k, child := range c {
				c[k] = redactPath(child, rest, f)
			}
		} else if child, ok := c[seg]; ok {
			c[seg] = redactPath(child, rest, f)
		}
	case []interface{}:
		if seg == "*" {
			for i := range c {
				c[i] = redactPath(c[i], rest, f)
			}
		}
	}
	return v
}

func resourceName(obj map[string]interface{}, opts Options) string {
	group, resource := opts.Group, opts.Resource
	if resource == "" {
		// Without the resource only the kind is known; its lower-case plural is the usual resource name.
		kind, _ := obj["kind"].(string)
		if kind == "" {
			return ""
		}
		resource = strings.ToLower(kind) + "s"
		group = apiGroup(obj)
	}
	if group != "" {
		return resource + "." + group
	}
	return resource
}

// IsSensitive says whether obj's values are fingerprinted: every core Secret, and the resources listed
// in opts.SensitiveResources.
func IsSensitive(obj map[string]interface{}, opts Options) bool {
	if isSecret(obj, opts) {
		return true
	}
	want := resourceName(obj, opts)
	if want == "" {
		return false
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

// hashValues replaces the values of data, stringData and binaryData by their fingerprints. A Secret's
// data and any binaryData are base64: the fingerprint is of the decoded bytes, so that data and
// stringData holding the same value compare equal, and a value that is not valid base64 is taken as it
// is.
func hashValues(obj map[string]interface{}, secret bool, f fingerprinter) {
	for _, field := range []string{"data", "stringData", "binaryData"} {
		values, ok := obj[field].(map[string]interface{})
		if !ok {
			if _, present := obj[field]; present && obj[field] != nil {
				// Not a map: no key structure to keep, so hide the whole value.
				obj[field] = f.whole(obj[field])
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
				values[k] = f.whole(v)
				continue
			}
			if f.keep && f.own(s) {
				continue
			}
			b := []byte(s)
			if base64Values {
				if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
					b = dec
				}
			}
			values[k] = f.key.Fingerprint(b)
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
