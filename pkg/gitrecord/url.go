package gitrecord

import "net/url"

// RedactedURL is the repository URL without credentials, as shown in records and RepoStatus.
func RedactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || u.Scheme == "ssh" {
		// scp-like and ssh URLs carry only a user name, which is no secret.
		return raw
	}
	u.User = nil
	return u.String()
}
