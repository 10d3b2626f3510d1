package ingest

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestScannerStrings holds the scanner's strings to encoding/json's, including the slow paths (escapes,
// invalid UTF-8, lone surrogates), and checks its refusals.
func TestScannerStrings(t *testing.T) {
	for _, in := range []string{
		`""`, `"plain ascii, longer than eight bytes"`, `"a\"b\\c\/d\be\ff\ng\rh\ti"`, `"\u00e9t\u00e9 \ud83d\ude00"`,
		`"lone \ud800 surrogate"`, "\"bad utf-8 \xff\xfe here\"", `"ünïcödé"`, `"` + strings.Repeat(`x\"`, 20) + `"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("%s: reference: %v", in, err)
		}
		s := &scanner{data: []byte(in)}
		got := s.stringValue()
		s.end()
		if s.err != nil || got != want {
			t.Errorf("%s: got %q (%v), want %q", in, got, s.err, want)
		}
	}
	for _, in := range []string{`"unterminated`, `"bad \x escape"`, "\"control \x01 char\"", `"short \u12"`, `"ends in \`, `5`, `"a" "b"`} {
		s := &scanner{data: []byte(in)}
		s.stringValue()
		s.end()
		if s.err == nil {
			t.Errorf("%s: accepted", in)
		}
	}
}

// TestScannerSkip checks that skipping validates like encoding/json.
func TestScannerSkip(t *testing.T) {
	for _, in := range []string{
		`{}`, `[]`, `{"a":[1,-2.5e+3,0,true,false,null,"s",{"b":{}}]}`, ` [ 1 , 2 ] `, `-0.0E-0`,
		`{"a":1,}`, `[1,]`, `{"a" 1}`, `01`, `1.`, `.5`, `-`, `1e`, `tru`, `nul`, `[`, `{"a":1`, `"`, `{1:2}`, `[1 2]`, `+1`,
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001), strings.Repeat("[", 100) + strings.Repeat("]", 100),
	} {
		s := &scanner{data: []byte(in)}
		s.skip()
		s.end()
		if want := json.Valid([]byte(in)) && !strings.HasPrefix(in, strings.Repeat("[", 10001)); (s.err == nil) != want {
			t.Errorf("%.40s: scanner error %v, valid JSON within the nesting limit: %v", in, s.err, want)
		}
	}
}
