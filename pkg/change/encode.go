package change

import (
	"encoding/json"
	"strconv"
)

// Encode is json.Marshal(c) with c.V set to Version (changes are written in the current storage
// version), faster on the ingest hot path: a change as the audit webhook makes it (no Git link, diff or
// orphan check yet) is written field by field, in the order and with the omissions
// encoding/json uses, and its Body is copied as it is rather than re-scanned and compacted (encoding/json
// does that to every json.RawMessage, which doubled the work on each ~2 KiB object already checked when
// the audit EventList was decoded). Body must therefore be valid JSON, as it is when it comes from a
// JSON decoder or json.Marshal. Other changes go through json.Marshal. TestEncodeMatchesMarshal and
// FuzzEncode hold the output to json.Marshal's, byte for byte.
func Encode(c *Change) ([]byte, error) {
	if !fastEncodable(c) {
		return encodeSlow(c)
	}
	b := make([]byte, 0, 640+len(c.Body))
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, Version, 10)
	b = append(b, `,"object":`...)
	b = appendObject(b, &c.Object)
	b = append(b, `,"verb":`...)
	b = appendString(b, string(c.Verb))
	b = append(b, `,"actor":`...)
	b = appendActor(b, &c.Actor)
	b = append(b, `,"source":`...)
	b = appendString(b, string(c.Source))
	if c.AuditID != "" {
		b = append(b, `,"auditID":`...)
		b = appendString(b, c.AuditID)
	}
	b = append(b, `,"changeID":`...)
	b = appendString(b, c.ChangeID)
	if c.RequestURI != "" {
		b = append(b, `,"requestURI":`...)
		b = appendString(b, c.RequestURI)
	}
	b = append(b, `,"changeTime":`...)
	if c.ChangeTime.IsZero() {
		b = append(b, "null"...)
	} else {
		// metav1.MicroTime.MarshalJSON, whose output needs no escaping.
		b = append(b, '"')
		b = c.ChangeTime.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
		b = append(b, '"')
	}
	b = append(b, `,"git":`...)
	b = append(b, zeroGitLink...)
	if len(c.Markers) > 0 {
		b = append(b, `,"markers":[`...)
		for i, m := range c.Markers {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, string(m))
		}
		b = append(b, ']')
	}
	b = append(b, `,"destination":{"namespace":`...)
	b = appendString(b, c.Destination.Namespace)
	b = append(b, `,"name":`...)
	b = appendString(b, c.Destination.Name)
	b = append(b, '}')
	if len(c.Body) > 0 {
		b = append(b, `,"body":`...)
		b = append(b, c.Body...)
	}
	if c.Redacted {
		b = append(b, `,"redacted":true`...)
	}
	if c.Sweep {
		b = append(b, `,"sweep":true`...)
	}
	return append(b, '}'), nil
}

// zeroGitLink is how encoding/json writes the empty Git link of a change not yet committed.
var zeroGitLink = func() []byte {
	b, err := json.Marshal(GitLink{})
	if err != nil {
		panic(err)
	}
	return b
}()

// fastEncodable tells the changes Encode writes itself: those the audit webhook and the reconciler's
// seeds make.
func fastEncodable(c *Change) bool {
	return c.Git == (GitLink{}) && c.Diff == "" && !c.DiffTruncated && c.OrphanCheck == nil
}

// encodeSlow is json.Marshal(c) with Body spliced in rather than re-scanned by encoding/json.
func encodeSlow(c *Change) ([]byte, error) {
	head := *c
	head.V = Version
	body := c.Body
	if len(body) == 0 {
		return json.Marshal(&head)
	}
	head.Body = nil
	data, err := json.Marshal(&head)
	if err != nil {
		return nil, err
	}
	// data ends with '}' and has at least one field before it (object, verb, ...).
	out := make([]byte, 0, len(data)+len(body)+8)
	out = append(out, data[:len(data)-1]...)
	out = append(out, `,"body":`...)
	out = append(out, body...)
	return append(out, '}'), nil
}

func appendObject(b []byte, o *Object) []byte {
	b = append(b, '{')
	if o.Group != "" {
		b = append(b, `"group":`...)
		b = appendString(b, o.Group)
		b = append(b, ',')
	}
	b = append(b, `"version":`...)
	b = appendString(b, o.Version)
	b = append(b, `,"resource":`...)
	b = appendString(b, o.Resource)
	if o.Kind != "" {
		b = append(b, `,"kind":`...)
		b = appendString(b, o.Kind)
	}
	if o.Namespace != "" {
		b = append(b, `,"namespace":`...)
		b = appendString(b, o.Namespace)
	}
	b = append(b, `,"name":`...)
	b = appendString(b, o.Name)
	if o.UID != "" {
		b = append(b, `,"uid":`...)
		b = appendString(b, o.UID)
	}
	if o.ResourceVersion != "" {
		b = append(b, `,"resourceVersion":`...)
		b = appendString(b, o.ResourceVersion)
	}
	return append(b, '}')
}

func appendActor(b []byte, a *Actor) []byte {
	b = append(b, '{')
	n := len(b) // a comma goes before every field but the first
	comma := func(b []byte) []byte {
		if len(b) > n {
			return append(b, ',')
		}
		return b
	}
	if a.Username != "" {
		b = append(b, `"username":`...)
		b = appendString(b, a.Username)
	}
	if a.UID != "" {
		b = comma(b)
		b = append(b, `"uid":`...)
		b = appendString(b, a.UID)
	}
	if len(a.Groups) > 0 {
		b = comma(b)
		b = append(b, `"groups":`...)
		b = appendStrings(b, a.Groups)
	}
	if im := a.Impersonator; im != nil {
		b = comma(b)
		b = append(b, `"impersonator":{"username":`...)
		b = appendString(b, im.Username)
		if im.UID != "" {
			b = append(b, `,"uid":`...)
			b = appendString(b, im.UID)
		}
		if len(im.Groups) > 0 {
			b = append(b, `,"groups":`...)
			b = appendStrings(b, im.Groups)
		}
		b = append(b, '}')
	}
	if a.UserAgent != "" {
		b = comma(b)
		b = append(b, `"userAgent":`...)
		b = appendString(b, a.UserAgent)
	}
	if len(a.SourceIPs) > 0 {
		b = comma(b)
		b = append(b, `"sourceIPs":`...)
		b = appendStrings(b, a.SourceIPs)
	}
	return append(b, '}')
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendString writes s as encoding/json does. Printable ASCII other than the characters it escapes
// (quote, backslash, and <, >, & for HTML safety) is copied; anything else is left to encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
