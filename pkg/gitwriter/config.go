package gitwriter

import (
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"k8s.io/apimachinery/pkg/util/wait"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/installkey"
	"github.com/kubehistory/kubehistory/pkg/queue"
	"github.com/kubehistory/kubehistory/pkg/sopsenc"
)

// Defaults for the fields of Config left empty.
const (
	DefaultBranch             = "main"
	DefaultCommitterName      = "kubehistory"
	DefaultCommitterEmail     = "kubehistory@localhost"
	DefaultAuthorEmailPattern = "{username}@users.kubehistory.local"
	DefaultCommitWindow       = time.Second
	DefaultMaxBatch           = 5000
	DefaultAckWait            = queue.DefaultAckWait
	DefaultMaxAckPending      = 20000
	DefaultMaxDiffBytes       = gitrecord.DefaultMaxDiffBytes
	DefaultRetryInitial       = 500 * time.Millisecond
	DefaultRetryMax           = time.Minute
	DefaultIDRetention        = 7 * 24 * time.Hour
	// DefaultGapGrace exceeds kube-apiserver's audit webhook retry span (about 2.5 minutes with the
	// default 10 s initial backoff) and a crashed writer's AckWait.
	DefaultGapGrace = 5 * time.Minute
)

// Credentials for the repository, from the GitDestination's credentials Secret.
type Credentials struct {
	// Username and Password for HTTP(S) basic auth.
	Username string
	Password string
	// Token for HTTP(S); sent as the basic-auth password (with Username, or "kubehistory"), which is
	// what GitHub, GitLab, Gitea and Bitbucket accept for access tokens.
	Token string
	// SSHPrivateKey (PEM) and KnownHosts (known_hosts format) for ssh:// and user@host:path URLs.
	// KnownHosts is required: a writer never trusts an unknown host key.
	SSHPrivateKey []byte
	KnownHosts    []byte
}

// Hooks let tests interrupt the writer at the points where a crash is hardest to survive.
type Hooks struct {
	// AfterPush runs after the push succeeded and before the records are published and the messages
	// acked. An error stops Run as a crash would: nothing is published, acked or nacked.
	AfterPush func() error
}

// Config is everything one writer needs; build it with ConfigFromGitDestination and set DataDir.
type Config struct {
	// Destination is the GitDestination this writer serves; it names the subject, the durable
	// consumer, the cache directory and the RepoStatus key.
	Destination change.DestinationRef
	// URL of the repository (file://, http(s)://, ssh:// or user@host:path), without credentials.
	URL         string
	Branch      string
	PathPrefix  string
	Credentials Credentials
	// CommitterName/CommitterEmail sign every commit; the author is the actor.
	CommitterName  string
	CommitterEmail string
	// AuthorEmailPattern builds the author email, "{username}" replaced by the sanitized username.
	AuthorEmailPattern string
	// CommitWindow is how long changes are gathered before committing (one commit per actor).
	CommitWindow time.Duration
	// SensitiveResources ("resource.group") are hashed like Secrets.
	SensitiveResources []string
	// OrphanPolicy is what an orphan check does with files whose objects no longer exist or left the
	// scope: Prune deletes them, Report (the default) lists them in the RepoStatus.
	OrphanPolicy configv1alpha1.OrphanPolicy
	// DataDir is the root of the writers' data; this writer keeps its bare clone and state under
	// DataDir/<namespace>/<name>.
	DataDir string
	// Identity names this replica in RepoStatus.writer; defaults to the hostname.
	Identity string
	// MaxBatch bounds the changes committed in one window.
	MaxBatch int
	// AckWait and MaxAckPending of the durable consumer. While it works on a batch the writer extends
	// the ack deadline of its messages every AckWait/3, so AckWait only matters after a crash: it is how
	// long a crashed writer's batch waits before it is delivered again (short, so that later changes do
	// not overtake it by much).
	AckWait       time.Duration
	MaxAckPending int
	// MaxDiffBytes bounds Record.Diff (DiffTruncated set when cut).
	MaxDiffBytes int
	// RetryInitial and RetryMax bound the exponential backoff between failed attempts.
	RetryInitial time.Duration
	RetryMax     time.Duration
	// IDRetention is how long committed change IDs are remembered for deduplication (a change
	// redelivered or re-sent later than that would be committed again).
	IDRetention time.Duration
	// GapGrace is how long after it was published a reconcile seed that finds Git behind the cluster is
	// held before it is recorded as a Gap: the audit change that explains the difference may still be
	// on its way (kube-apiserver re-sending a batch, a crashed writer's batch waiting for AckWait). When
	// the seed comes back, a change that arrived meanwhile has made it moot. Negative: no hold (tests).
	GapGrace time.Duration
	// Key is the installation key: it makes the keyed fingerprints of sensitive values and seals the
	// commits this writer makes. Required.
	Key installkey.Key `json:"-"`
	// KeyID is Key's ID; it is part of the config hash, so that a rotated key restarts the writers.
	KeyID string
	// SensitivePaths are further JSON paths, as "resource.group:field.path" ("configmaps:data.password"
	// for the core group, "*" for any resource), whose values are replaced by fingerprints.
	SensitivePaths []string
	// StripAnnotations are annotations removed from every object beside the built-in list (annotations
	// that copy the object, such as kubectl's last-applied-configuration).
	StripAnnotations []string
	// SOPSRecipients, when set, make the writer store Secrets SOPS-encrypted for these age recipients
	// (fetched from the API server at write time: no value travels through JetStream) instead of
	// fingerprinted.
	SOPSRecipients []string
	// Scope applies the rules' objectSelectors to objects whose labels the audit event did not carry;
	// nil records every change it is sent.
	Scope Scope `json:"-"`
	// Hooks are for tests.
	Hooks Hooks `json:"-"`
}

// ConfigFromGitDestination builds the writer config of a GitDestination; secretData is the data of
// its credentials Secret (nil when it has none). DataDir, Identity and the tuning fields keep their
// defaults and may be set by the caller.
func ConfigFromGitDestination(gd *configv1alpha1.GitDestination, secretData map[string][]byte) (Config, error) {
	cfg := Config{
		Destination:        change.DestinationRef{Namespace: gd.Namespace, Name: gd.Name},
		URL:                gd.Spec.URL,
		Branch:             gd.Spec.Branch,
		PathPrefix:         gd.Spec.PathPrefix,
		CommitterName:      gd.Spec.CommitIdentity.CommitterName,
		CommitterEmail:     gd.Spec.CommitIdentity.CommitterEmail,
		AuthorEmailPattern: gd.Spec.CommitIdentity.AuthorEmailPattern,
		SensitiveResources: append([]string(nil), gd.Spec.SensitiveResources...),
		SensitivePaths:     append([]string(nil), gd.Spec.SensitivePaths...),
		StripAnnotations:   append([]string(nil), gd.Spec.StripAnnotations...),
		OrphanPolicy:       gd.Spec.OrphanPolicy,
	}
	if e := gd.Spec.Encryption; e != nil {
		if err := sopsenc.ValidateRecipients(e.AgeRecipients); err != nil {
			return cfg, err
		}
		cfg.SOPSRecipients = append([]string(nil), e.AgeRecipients...)
	}
	if gd.Spec.CommitWindow != nil {
		cfg.CommitWindow = gd.Spec.CommitWindow.Duration
	}
	if secretData != nil {
		cfg.Credentials = Credentials{
			Username:      string(secretData["username"]),
			Password:      string(secretData["password"]),
			Token:         string(secretData["token"]),
			SSHPrivateKey: secretData["ssh-privatekey"],
			KnownHosts:    secretData["known_hosts"],
		}
	}
	cfg.setDefaults()
	return cfg, cfg.validate()
}

func (c *Config) setDefaults() {
	if c.Branch == "" {
		c.Branch = DefaultBranch
	}
	if c.CommitterName == "" {
		c.CommitterName = DefaultCommitterName
	}
	if c.CommitterEmail == "" {
		c.CommitterEmail = DefaultCommitterEmail
	}
	if c.AuthorEmailPattern == "" {
		c.AuthorEmailPattern = DefaultAuthorEmailPattern
	}
	if c.CommitWindow <= 0 {
		c.CommitWindow = DefaultCommitWindow
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.MaxAckPending < c.MaxBatch {
		c.MaxBatch = c.MaxAckPending
	}
	if c.MaxDiffBytes <= 0 {
		c.MaxDiffBytes = DefaultMaxDiffBytes
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = DefaultRetryInitial
	}
	if c.RetryMax <= 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.IDRetention <= 0 {
		c.IDRetention = DefaultIDRetention
	}
	if c.GapGrace == 0 {
		c.GapGrace = DefaultGapGrace
	}
	if c.Identity == "" {
		c.Identity, _ = os.Hostname()
	}
	if c.OrphanPolicy == "" {
		c.OrphanPolicy = configv1alpha1.OrphanReport // the CRD default: never delete from Git unasked
	}
	c.PathPrefix = strings.Trim(c.PathPrefix, "/")
}

func (c *Config) validate() error {
	if c.Destination.Namespace == "" || c.Destination.Name == "" {
		return fmt.Errorf("gitwriter: destination namespace and name are required")
	}

	if c.URL == "" {
		return fmt.Errorf("gitwriter: destination %s has no URL", c.Destination)
	}
	if _, err := transport.NewEndpoint(c.URL); err != nil {
		return fmt.Errorf("gitwriter: destination %s: invalid URL: %w", c.Destination, err)
	}
	if u, err := url.Parse(c.URL); err == nil && u.User != nil {
		if _, hasPassword := u.User.Password(); hasPassword {
			return fmt.Errorf("gitwriter: destination %s: put credentials in the credentials Secret, not in the URL", c.Destination)
		}
	}
	return nil
}

// retryBackoff is the backoff between failed attempts: RetryInitial, doubling up to RetryMax, then
// RetryMax for as long as it takes.
func (c *Config) retryBackoff() wait.Backoff {
	return wait.Backoff{Duration: c.RetryInitial, Factor: 2, Cap: c.RetryMax, Steps: math.MaxInt32}
}

// dir is this writer's directory under DataDir.
func (c *Config) dir() string {
	return filepath.Join(c.DataDir, c.Destination.Namespace, c.Destination.Name)
}

// authMethod builds go-git's authentication from the credentials and the URL's scheme.
func (c *Config) authMethod() (transport.AuthMethod, error) {
	ep, err := transport.NewEndpoint(c.URL)
	if err != nil {
		return nil, err
	}
	cr := c.Credentials
	switch ep.Protocol {
	case "http", "https":
		switch {
		case cr.Token != "":
			user := cr.Username
			if user == "" {
				user = "kubehistory"
			}
			return &githttp.BasicAuth{Username: user, Password: cr.Token}, nil
		case cr.Username != "" || cr.Password != "":
			return &githttp.BasicAuth{Username: cr.Username, Password: cr.Password}, nil
		}
		return nil, nil
	case "ssh":
		return c.sshAuth(ep)
	}
	return nil, nil
}
