package changes

import (
	"strconv"
	"strings"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// Labels set on every change so that plain kubectl can select by them with -l. Label selectors, unlike
// field selectors, know numeric comparisons, which is how time ranges are reached:
//
//	kubectl get resourcechanges -l 'history.kubehistory.io/time>1764165600'
//	kubectl get resourcechanges -l 'history.kubehistory.io/date>20261125,history.kubehistory.io/verb=delete'
const (
	LabelVerb     = "history.kubehistory.io/verb"
	LabelSource   = "history.kubehistory.io/source"
	LabelGroup    = "history.kubehistory.io/group"
	LabelResource = "history.kubehistory.io/resource"
	LabelActor    = "history.kubehistory.io/actor"
	// LabelTime is the change time in Unix seconds.
	LabelTime = "history.kubehistory.io/time"
	// LabelDate is the change date (UTC) as YYYYMMDD, a number too.
	LabelDate = "history.kubehistory.io/date"
)

// Labels returns the selection labels of a record.
func Labels(rec *change.Record) map[string]string {
	group := rec.Object.Group
	if group == "" {
		group = "core"
	}
	l := map[string]string{
		LabelVerb:     labelValue(string(rec.Verb)),
		LabelSource:   labelValue(string(rec.Source)),
		LabelGroup:    labelValue(group),
		LabelResource: labelValue(rec.Object.Resource),
		LabelTime:     strconv.FormatInt(rec.ChangeTime.Unix(), 10),
		LabelDate:     rec.ChangeTime.UTC().Format("20060102"),
	}
	if rec.Actor.Username != "" {
		l[LabelActor] = labelValue(rec.Actor.Username)
	}
	return l
}

// labelValue maps a string onto the label value alphabet: characters outside [A-Za-z0-9._-] become ".",
// (so "system:serviceaccount:ci:bot" is "system.serviceaccount.ci.bot"), cut to 63 characters with
// alphanumeric ends. Exact matches on the original go through field selectors.
func labelValue(s string) string {
	if isLabelValue(s) {
		return s // most values (verbs, resources, plain user names) are already valid: no copy
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('.')
		}
	}
	v := b.String()
	if len(v) > 63 {
		v = v[:63]
	}
	return strings.Trim(v, "-_.")
}

// isLabelValue reports whether s is a label value as it is: at most 63 characters of [A-Za-z0-9._-]
// with alphanumeric ends (or empty).
func isLabelValue(s string) bool {
	if len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && ((c != '-' && c != '_' && c != '.') || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}
