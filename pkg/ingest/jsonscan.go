package ingest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"unicode/utf8"
	"unsafe"
)

// scanner is a strict, allocation-light JSON reader for the audit webhook's hot path: it walks a body
// once, validates everything it passes over (as encoding/json would: string escapes and control
// characters, number grammar, literals, nesting up to 10,000 levels), hands out strings that point into
// the body instead of copying them, and returns skipped values as sub-slices of it. The body must
// therefore stay unchanged for as long as anything read from it is in use.
//
// The first error stops the scan: every method is a no-op afterwards and err tells what and where.
type scanner struct {
	data  []byte
	pos   int
	depth int
	err   error
}

const maxNesting = 10000 // encoding/json's limit

func (s *scanner) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("%s at offset %d", fmt.Sprintf(format, args...), s.pos)
	}
	s.pos = len(s.data)
}

// next skips white space and returns the next byte without consuming it, or 0 at the end.
func (s *scanner) next() byte {
	for s.pos < len(s.data) {
		switch c := s.data[s.pos]; c {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return c
		}
	}
	return 0
}

// end checks that only white space is left.
func (s *scanner) end() {
	if s.err == nil && s.next() != 0 {
		s.fail("unexpected data after the top-level value")
	}
}

// null consumes a null and reports whether there was one.
func (s *scanner) null() bool {
	if s.err != nil || s.next() != 'n' {
		return false
	}
	s.literal("null")
	return s.err == nil
}

func (s *scanner) literal(lit string) {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		s.fail("invalid literal, expected %s", lit)
		return
	}
	s.pos += len(lit)
}

// object calls field for each member of an object, with the key as it is in the body (unescaped only
// if it holds escapes); field must consume the value. A null is an empty object. It reports false, and
// fails, if the next value is neither.
func (s *scanner) object(field func(key string) bool) bool {
	switch s.next() {
	case '{':
	case 'n':
		return s.null()
	default:
		if s.err == nil {
			s.fail("expected an object")
		}
		return false
	}
	if !s.enter() {
		return false
	}
	s.pos++
	if s.next() == '}' {
		s.pos++
		s.depth--
		return true
	}
	for s.err == nil {
		if s.next() != '"' {
			s.fail("expected a string as object key")
			return false
		}
		key := s.str()
		if s.next() != ':' {
			s.fail("expected ':' after object key")
			return false
		}
		s.pos++
		if !field(key) || s.err != nil {
			return false
		}
		switch s.next() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			s.depth--
			return true
		default:
			s.fail("expected ',' or '}' in object")
		}
	}
	return false
}

// array calls elem for each element of an array; elem must consume it. A null is an empty array.
func (s *scanner) array(elem func() bool) bool {
	switch s.next() {
	case '[':
	case 'n':
		return s.null()
	default:
		if s.err == nil {
			s.fail("expected an array")
		}
		return false
	}
	if !s.enter() {
		return false
	}
	s.pos++
	if s.next() == ']' {
		s.pos++
		s.depth--
		return true
	}
	for s.err == nil {
		if !elem() || s.err != nil {
			return false
		}
		switch s.next() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			s.depth--
			return true
		default:
			s.fail("expected ',' or ']' in array")
		}
	}
	return false
}

func (s *scanner) enter() bool {
	if s.depth++; s.depth > maxNesting {
		s.fail("exceeded max depth of %d", maxNesting)
		return false
	}
	return true
}

// stringValue reads a string; a null reads as "".
func (s *scanner) stringValue() string {
	switch s.next() {
	case '"':
		return s.str()
	case 'n':
		s.null()
		return ""
	}
	if s.err == nil {
		s.fail("expected a string")
	}
	return ""
}

// skipStringValue passes over a string or null.
func (s *scanner) skipStringValue() {
	switch s.next() {
	case '"':
		s.skipString()
	case 'n':
		s.null()
	default:
		if s.err == nil {
			s.fail("expected a string")
		}
	}
}

// unescape unquotes the body of an ASCII string with the common escapes; ok is false for a \u escape,
// left to encoding/json.
func unescape(raw []byte) (string, bool) {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++ // the scanner checked that an escape is complete
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		default:
			return "", false
		}
	}
	return string(out), true
}

// strings reads an array of strings; a null reads as nil.
func (s *scanner) strings() []string {
	if s.null() {
		return nil
	}
	out := []string{}
	s.array(func() bool {
		out = append(out, s.stringValue())
		return true
	})
	return out
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// str reads the string at pos (which holds its opening quote). Without escapes or invalid UTF-8 the
// result points into the body; otherwise encoding/json unquotes it, for the same result (U+FFFD for
// invalid UTF-8 and lone surrogates).
func (s *scanner) str() string {
	start := s.pos
	raw, escaped, high := s.scanString()
	switch {
	case s.err != nil:
		return ""
	case escaped && !high:
		if out, ok := unescape(raw); ok {
			return out
		}
	case !escaped && (!high || utf8.Valid(raw)):
		if len(raw) == 0 {
			return ""
		}
		return unsafe.String(&raw[0], len(raw))
	}
	var out string
	if err := json.Unmarshal(s.data[start:s.pos], &out); err != nil {
		s.pos = start
		s.fail("invalid string: %v", err)
		return ""
	}
	return out
}

// skipString passes over a string without unquoting it.
func (s *scanner) skipString() { s.scanString() }

// scanString checks the string at pos (which holds its opening quote) and moves past it, returning its
// content as it is in the body, whether it holds escapes and whether it holds non-ASCII bytes.
func (s *scanner) scanString() (raw []byte, escaped, high bool) {
	start := s.pos + 1
	i := start
	for {
		// Eight bytes at a time while none is a quote, a backslash or a control character.
		for i+8 <= len(s.data) {
			v := binary.LittleEndian.Uint64(s.data[i:])
			quote := v ^ (ones * '"')
			backslash := v ^ (ones * '\\')
			special := ((quote - ones) &^ quote) | ((backslash - ones) &^ backslash) | (v - ones*0x20)
			if (special&^v)&highs != 0 {
				break
			}
			high = high || v&highs != 0
			i += 8
		}
		if i >= len(s.data) {
			s.pos = i
			s.fail("unterminated string")
			return nil, false, false
		}
		switch c := s.data[i]; {
		case c == '"':
			s.pos = i + 1
			return s.data[start:i], escaped, high
		case c == '\\':
			escaped = true
			if i+1 >= len(s.data) {
				s.pos = i
				s.fail("unterminated string")
				return nil, false, false
			}
			switch s.data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(s.data) || !isHex(s.data[i+2]) || !isHex(s.data[i+3]) || !isHex(s.data[i+4]) || !isHex(s.data[i+5]) {
					s.pos = i
					s.fail("invalid \\u escape in string")
					return nil, false, false
				}
				i += 6
			default:
				s.pos = i
				s.fail("invalid escape in string")
				return nil, false, false
			}
		case c < 0x20:
			s.pos = i
			s.fail("invalid control character in string")
			return nil, false, false
		default:
			high = high || c >= utf8.RuneSelf
			i++
		}
	}
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// number reads a JSON number and returns its text.
func (s *scanner) number() []byte {
	if s.next() == 0 {
		s.fail("expected a number")
		return nil
	}
	start, d, i := s.pos, s.data, s.pos
	digits := func() int {
		n := 0
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case digits() == 0:
		s.fail("invalid number")
		return nil
	}
	if i < len(d) && d[i] == '.' {
		i++
		if digits() == 0 {
			s.fail("invalid number")
			return nil
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if digits() == 0 {
			s.fail("invalid number")
			return nil
		}
	}
	s.pos = i
	return d[start:i]
}

// skip passes over one value of any kind, validating it.
func (s *scanner) skip() {
	switch c := s.next(); {
	case c == '{':
		s.object(func(string) bool { s.skip(); return true })
	case c == '[':
		s.array(func() bool { s.skip(); return true })
	case c == '"':
		s.skipString()
	case c == 't':
		s.literal("true")
	case c == 'f':
		s.literal("false")
	case c == 'n':
		s.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		s.number()
	case s.err == nil:
		s.fail("expected a value")
	}
}

// raw passes over one value and returns its bytes (a sub-slice of the body).
func (s *scanner) raw() []byte {
	s.next()
	start := s.pos
	s.skip()
	if s.err != nil {
		return nil
	}
	return s.data[start:s.pos:s.pos]
}
