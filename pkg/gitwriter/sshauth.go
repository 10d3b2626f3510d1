package gitwriter

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/go-git/go-git/v5/plumbing/transport"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshAuth builds the public-key authentication of an ssh:// or user@host:path destination. The
// server's host key is always checked against the destination's known_hosts; there is no way to
// turn that off.
func (c *Config) sshAuth(ep *transport.Endpoint) (transport.AuthMethod, error) {
	cr := c.Credentials
	if len(cr.SSHPrivateKey) == 0 {
		return nil, fmt.Errorf("gitwriter: destination %s: ssh URL without ssh-privatekey", c.Destination)
	}
	if len(cr.KnownHosts) == 0 {
		return nil, fmt.Errorf("gitwriter: destination %s: ssh URL without known_hosts", c.Destination)
	}
	user := ep.User
	if user == "" {
		user = "git"
	}
	keys, err := gitssh.NewPublicKeys(user, cr.SSHPrivateKey, "")
	if err != nil {
		return nil, fmt.Errorf("gitwriter: destination %s: ssh-privatekey: %w", c.Destination, err)
	}
	// The known_hosts readers only read files: keep a copy next to the clone.
	khFile := filepath.Join(c.dir(), "known_hosts")
	if err := os.MkdirAll(c.dir(), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(khFile, cr.KnownHosts, 0o600); err != nil {
		return nil, err
	}
	db, err := gitssh.NewKnownHostsDb(khFile)
	if err != nil {
		return nil, fmt.Errorf("gitwriter: destination %s: known_hosts: %w", c.Destination, err)
	}
	keys.HostKeyCallback = checkHostKey(db.HostKeyCallback())
	// Offer the server only the host key types known_hosts has for it. Without this, Go's client
	// asks for its own preferred type (ECDSA before Ed25519), and a server that has both answers with
	// a key known_hosts does not list: a "key mismatch" although the host is known. go-git derives
	// these algorithms itself only when it also picks the callback (from ~/.ssh/known_hosts).
	port := ep.Port
	if port <= 0 {
		port = gitssh.DefaultPort
	}
	keys.HostKeyAlgorithms = db.HostKeyAlgorithms(net.JoinHostPort(ep.Host, strconv.Itoa(port)))
	return keys, nil
}

// checkHostKey makes a refused host key say so, with the key the server showed, so that RepoStatus
// tells the operator what to compare with known_hosts.
func checkHostKey(cb ssh.HostKeyCallback) ssh.HostKeyCallback {
	return func(host string, remote net.Addr, key ssh.PublicKey) error {
		if err := cb(host, remote, key); err != nil {
			return &hostKeyError{host: knownhosts.Normalize(host), keyType: key.Type(), fingerprint: ssh.FingerprintSHA256(key), err: err}
		}
		return nil
	}
}

// hostKeyError is a server host key that the destination's known_hosts refused (unknown, or another
// key than listed). It survives the wrapping by x/crypto/ssh and go-git, so that the writer tells it
// from other failures by type.
type hostKeyError struct {
	host, keyType, fingerprint string
	err                        error
}

func (e *hostKeyError) Error() string {
	return fmt.Sprintf("host key of %s (%s %s) refused by known_hosts: %v", e.host, e.keyType, e.fingerprint, e.err)
}

func (e *hostKeyError) Unwrap() error { return e.err }

func init() {
	// go-git reads the process user's ~/.ssh/config (Hostname, Port) by default, which could send a
	// destination's connection, with its key, somewhere other than its URL says. The URL alone decides.
	gitssh.DefaultSSHConfig = nil
}
