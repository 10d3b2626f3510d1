// Package sopsenc writes an object as a SOPS-encrypted YAML file (https://getsops.io) whose values under
// `data` and `stringData` are encrypted for age recipients: the standard `sops --decrypt` with the age
// identity restores the plain object, which `kubectl apply` turns back into the Secret.
//
// The file is what sops itself writes for `--encrypted-regex '^(data|stringData)$'`: every encrypted
// value is ENC[AES256_GCM,data:…,iv:…,tag:…,type:…] under a 32-byte data key with the value's path as
// additional data; the data key is age-encrypted (armored) for each recipient in the `sops.age` list;
// `sops.mac` is the SHA-512 of every value in document order, encrypted with lastmodified as additional
// data.
//
// Unlike sops, the output is deterministic where that is safe, so that Git shows a change only when a
// value changed and the reconciler finds an unchanged Secret equal: the data key of a file is derived
// from the installation key and the file's path, each IV from the data key, the value's path and the
// value (equal IVs only ever encrypt equal plaintexts under one key), and an unchanged file keeps its
// previous lastmodified and age stanzas (age encryption itself is randomized).
package sopsenc

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"sigs.k8s.io/yaml"
)

// Version is the sops format version the files declare.
const Version = "3.9.0"

// EncryptedRegex selects the encrypted values: every value under a key named data or stringData.
const EncryptedRegex = "^(data|stringData)$"

const ivSize = 32 // sops' AES-GCM nonce size

// Options are what one file is encrypted with.
type Options struct {
	// Recipients are age X25519 recipients ("age1…"); at least one.
	Recipients []string
	// DataKey is the file's 32-byte data key.
	DataKey []byte
	// Now is the lastmodified of a file whose values changed.
	Now time.Time
	// Previous is the file's current content in Git, if any: when the values did not change and its
	// data key and recipients are the same, its lastmodified and age stanzas are kept, so the file is
	// byte for byte the same.
	Previous []byte
}

// ValidateRecipients parses age recipients.
func ValidateRecipients(recipients []string) error {
	if len(recipients) == 0 {
		return errors.New("sops: at least one age recipient is needed")
	}
	for _, r := range recipients {
		if _, err := age.ParseX25519Recipient(r); err != nil {
			return fmt.Errorf("sops: age recipient %q: %w", r, err)
		}
	}
	return nil
}

type ageStanza struct {
	Recipient string `json:"recipient"`
	Enc       string `json:"enc"`
}

// Encrypt returns the SOPS YAML of obj (a JSON object as decoded by encoding/json with UseNumber).
func Encrypt(obj map[string]interface{}, o Options) ([]byte, error) {
	if len(o.DataKey) != 32 {
		return nil, errors.New("sops: the data key must be 32 bytes")
	}
	if err := ValidateRecipients(o.Recipients); err != nil {
		return nil, err
	}
	if _, ok := obj["sops"]; ok {
		return nil, errors.New("sops: the object has a top-level key named sops")
	}
	e := &encoder{key: o.DataKey, mac: sha512.New()}
	var body bytes.Buffer
	if err := e.mapping(&body, obj, nil, 0, false); err != nil {
		return nil, err
	}
	mac := fmt.Sprintf("%X", e.mac.Sum(nil))

	if prevMod, prevAge, ok := reusable(o); ok {
		out, err := e.render(body.Bytes(), mac, prevMod, prevAge)
		if err == nil && bytes.Equal(out, o.Previous) {
			return out, nil
		}
		// Values changed: new lastmodified, same data key, so the age stanzas still hold.
		return e.render(body.Bytes(), mac, o.Now.UTC().Format(time.RFC3339), prevAge)
	}
	stanzas := make([]ageStanza, 0, len(o.Recipients))
	for _, r := range o.Recipients {
		enc, err := encryptDataKey(r, o.DataKey)
		if err != nil {
			return nil, err
		}
		stanzas = append(stanzas, ageStanza{Recipient: r, Enc: enc})
	}
	return e.render(body.Bytes(), mac, o.Now.UTC().Format(time.RFC3339), stanzas)
}

// reusable returns the lastmodified and age stanzas of the previous file when they were made for the
// same data key (its MAC opens under it) and the same recipients.
func reusable(o Options) (string, []ageStanza, bool) {
	if len(o.Previous) == 0 {
		return "", nil, false
	}
	var prev struct {
		Sops struct {
			Age          []ageStanza `json:"age"`
			LastModified string      `json:"lastmodified"`
			MAC          string      `json:"mac"`
		} `json:"sops"`
	}
	if err := yaml.Unmarshal(o.Previous, &prev); err != nil {
		return "", nil, false
	}
	if len(prev.Sops.Age) != len(o.Recipients) {
		return "", nil, false
	}
	for i, s := range prev.Sops.Age {
		if s.Recipient != o.Recipients[i] || s.Enc == "" {
			return "", nil, false
		}
	}
	if _, err := decryptValue(prev.Sops.MAC, o.DataKey, prev.Sops.LastModified); err != nil {
		return "", nil, false
	}
	return prev.Sops.LastModified, prev.Sops.Age, true
}

func encryptDataKey(recipient string, dataKey []byte) (string, error) {
	r, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, r)
	if err != nil {
		return "", err
	}
	if _, err := w.Write(dataKey); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	if err := aw.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

type encoder struct {
	key []byte
	mac hash.Hash
}

// render appends the sops metadata to the encrypted document.
func (e *encoder) render(body []byte, mac, lastModified string, stanzas []ageStanza) ([]byte, error) {
	encMAC, err := e.encrypt(mac, "str", lastModified)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(body)
	b.WriteString("sops:\n  age:\n")
	for _, s := range stanzas {
		b.WriteString("  - recipient: " + strconv.Quote(s.Recipient) + "\n    enc: |\n")
		for _, line := range strings.Split(strings.TrimRight(s.Enc, "\n"), "\n") {
			b.WriteString("      " + line + "\n")
		}
	}
	b.WriteString("  lastmodified: " + strconv.Quote(lastModified) + "\n")
	b.WriteString("  mac: " + strconv.Quote(encMAC) + "\n")
	b.WriteString("  encrypted_regex: " + strconv.Quote(EncryptedRegex) + "\n")
	b.WriteString("  version: " + strconv.Quote(Version) + "\n")
	return b.Bytes(), nil
}

var encryptedKey = regexp.MustCompile(EncryptedRegex)

// mapping writes a block mapping with sorted keys at the given indentation; path holds the keys above.
func (e *encoder) mapping(b *bytes.Buffer, m map[string]interface{}, path []string, indent int, encrypted bool) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	pad := strings.Repeat(" ", indent)
	for _, k := range keys {
		b.WriteString(pad + strconv.Quote(k) + ":")
		if err := e.value(b, m[k], append(path, k), indent, encrypted || encryptedKey.MatchString(k)); err != nil {
			return err
		}
	}
	return nil
}

// value writes v after "key:" or "-" (a space or a newline follows).
func (e *encoder) value(b *bytes.Buffer, v interface{}, path []string, indent int, encrypted bool) error {
	switch x := v.(type) {
	case map[string]interface{}:
		if len(x) == 0 {
			b.WriteString(" {}\n")
			return nil
		}
		b.WriteString("\n")
		return e.mapping(b, x, path, indent+2, encrypted)
	case []interface{}:
		if len(x) == 0 {
			b.WriteString(" []\n")
			return nil
		}
		b.WriteString("\n")
		pad := strings.Repeat(" ", indent)
		for _, item := range x {
			b.WriteString(pad + "-")
			// Items of a list are written one level deeper so a mapping item starts on its own line.
			if err := e.value(b, item, path, indent+2, encrypted); err != nil {
				return err
			}
		}
		return nil
	case nil:
		b.WriteString(" null\n")
		return nil
	}
	text, typ, err := scalar(v)
	if err != nil {
		return err
	}
	e.mac.Write([]byte(text))
	if !encrypted || text == "" {
		b.WriteString(" " + literal(v, text) + "\n")
		return nil
	}
	enc, err := e.encrypt(text, typ, strings.Join(path, ":")+":")
	if err != nil {
		return err
	}
	b.WriteString(" " + strconv.Quote(enc) + "\n")
	return nil
}

// scalar is a leaf's text as sops computes it (its ToBytes) and its sops type.
func scalar(v interface{}) (string, string, error) {
	switch x := v.(type) {
	case string:
		return x, "str", nil
	case bool:
		if x {
			return "True", "bool", nil
		}
		return "False", "bool", nil
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return strconv.FormatInt(i, 10), "int", nil
		}
		f, err := x.Float64()
		if err != nil {
			return "", "", fmt.Errorf("sops: number %q: %w", x, err)
		}
		return strconv.FormatFloat(f, 'f', -1, 64), "float", nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), "float", nil
	case int:
		return strconv.Itoa(x), "int", nil
	case int64:
		return strconv.FormatInt(x, 10), "int", nil
	}
	return "", "", fmt.Errorf("sops: unsupported value of type %T", v)
}

// literal is how an unencrypted leaf is written: strings double-quoted (never read back as another
// type), numbers and booleans plain.
func literal(v interface{}, text string) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case bool:
		return strconv.FormatBool(x)
	case json.Number:
		if _, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return text
		}
		return floatLiteral(text)
	case float64:
		return floatLiteral(text)
	}
	return text
}

// floatLiteral keeps a float a float when read back ("3" would be an int).
func floatLiteral(text string) string {
	if strings.ContainsAny(text, ".eE") {
		return text
	}
	return text + ".0"
}

// encrypt is sops' AES-GCM value encryption with a deterministic IV.
func (e *encoder) encrypt(text, typ, additionalData string) (string, error) {
	block, err := aes.NewCipher(e.key)
	if err != nil {
		return "", err
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, ivSize)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, e.key)
	m.Write([]byte("kubehistory-sops-iv\x00" + additionalData + "\x00" + typ + "\x00" + text))
	iv := m.Sum(nil)[:ivSize]
	sealed := gcm.Seal(nil, iv, []byte(text), []byte(additionalData))
	data, tag := sealed[:len(sealed)-gcm.Overhead()], sealed[len(sealed)-gcm.Overhead():]
	return fmt.Sprintf("ENC[AES256_GCM,data:%s,iv:%s,tag:%s,type:%s]",
		base64.StdEncoding.EncodeToString(data), base64.StdEncoding.EncodeToString(iv), base64.StdEncoding.EncodeToString(tag), typ), nil
}

var encValue = regexp.MustCompile(`^ENC\[AES256_GCM,data:(.*),iv:(.+),tag:(.+),type:(.+)\]$`)

// decryptValue opens one ENC[…] value (the MAC of a previous file; tests).
func decryptValue(value string, key []byte, additionalData string) (string, error) {
	m := encValue.FindStringSubmatch(value)
	if m == nil {
		return "", errors.New("sops: not an encrypted value")
	}
	var parts [3][]byte
	for i := 0; i < 3; i++ {
		b, err := base64.StdEncoding.DecodeString(m[i+1])
		if err != nil {
			return "", err
		}
		parts[i] = b
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", err
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, len(parts[1]))
	if err != nil {
		return "", err
	}
	plain, err := gcm.Open(nil, parts[1], append(parts[0], parts[2]...), []byte(additionalData))
	if err != nil {
		return "", err
	}
	return string(plain), nil
}
