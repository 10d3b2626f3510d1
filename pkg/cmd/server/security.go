package server

import (
	"fmt"
	"slices"

	"github.com/spf13/pflag"

	"github.com/kubehistory/kubehistory/pkg/destinations"
	"github.com/kubehistory/kubehistory/pkg/installkey"
	"github.com/kubehistory/kubehistory/pkg/sanitize"
)

// SecurityOptions are what the operator decides about trust: where history may be sent, what counts
// as sensitive, and the installation key.
type SecurityOptions struct {
	// InstallationKeySecret names the Secret, in --service-namespace, that holds the installation key;
	// it is created with a random key on first start.
	InstallationKeySecret string
	// AllowedURLSchemes of GitDestination URLs.
	AllowedURLSchemes []string
	// TrustedDestinationNamespaces may hold the GitDestinations of ClusterWatchRules; empty means
	// --service-namespace only.
	TrustedDestinationNamespaces []string
	// SensitiveResources, SensitivePaths and StripAnnotations apply to every destination.
	SensitiveResources []string
	SensitivePaths     []string
	StripAnnotations   []string
}

// NewSecurityOptions returns the defaults.
func NewSecurityOptions() *SecurityOptions {
	return &SecurityOptions{
		InstallationKeySecret: installkey.DefaultSecretName,
		AllowedURLSchemes:     slices.Clone(destinations.DefaultAllowedURLSchemes),
	}
}

// AddFlags adds the security flags.
func (o *SecurityOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.InstallationKeySecret, "installation-key-secret", o.InstallationKeySecret, "Secret in --service-namespace holding the installation key, which keys the fingerprints of sensitive values and seals kubehistory's commits; created with a random key on first start. Rotating it changes every fingerprint (see docs/security.md).")
	fs.StringSliceVar(&o.AllowedURLSchemes, "allowed-url-schemes", o.AllowedURLSchemes, "URL schemes GitDestinations may use: https and ssh (including scp-style user@host:path). http sends credentials in the clear and file reaches the server's own disk: add them only for local demos and tests.")
	fs.StringSliceVar(&o.TrustedDestinationNamespaces, "trusted-destination-namespaces", o.TrustedDestinationNamespaces, "Namespaces whose GitDestinations ClusterWatchRules may send cluster-wide history to (default: --service-namespace only); \"*\" trusts every namespace. A ClusterWatchRule aiming elsewhere records nothing and reports DestinationNotTrusted.")
	fs.StringSliceVar(&o.SensitiveResources, "sensitive-resources", o.SensitiveResources, "Resources (\"resource.group\", \"configmaps\" for the core group) whose data, stringData and binaryData values are replaced by keyed fingerprints for every destination, beside Secrets which always are.")
	fs.StringSliceVar(&o.SensitivePaths, "sensitive-paths", o.SensitivePaths, "Values replaced by keyed fingerprints for every destination, as resource.group:path.to.field (\"*\" for any resource or path segment), e.g. databases.db.example.com:spec.password.")
	fs.StringSliceVar(&o.StripAnnotations, "strip-annotations", o.StripAnnotations, "Annotations removed from every object before it is stored, beside kubectl.kubernetes.io/last-applied-configuration (always removed).")
}

// Validate reports unusable security options.
func (o *SecurityOptions) Validate() []error {
	var errs []error
	if o.InstallationKeySecret == "" {
		errs = append(errs, fmt.Errorf("--installation-key-secret is required"))
	}
	if len(o.AllowedURLSchemes) == 0 {
		errs = append(errs, fmt.Errorf("--allowed-url-schemes must allow at least one scheme"))
	}
	for _, s := range o.AllowedURLSchemes {
		switch s {
		case "https", "ssh", "http", "file":
		default:
			errs = append(errs, fmt.Errorf("--allowed-url-schemes: unknown scheme %q (https, ssh, http, file)", s))
		}
	}
	for _, p := range o.SensitivePaths {
		if err := sanitize.ValidatePath(p); err != nil {
			errs = append(errs, fmt.Errorf("--sensitive-paths: %w", err))
		}
	}
	return errs
}

// trustedNamespaces are the namespaces ClusterWatchRules may send history to.
func (o *Options) trustedNamespaces() []string {
	if len(o.Security.TrustedDestinationNamespaces) == 0 {
		return []string{o.ServiceNamespace}
	}
	return o.Security.TrustedDestinationNamespaces
}
