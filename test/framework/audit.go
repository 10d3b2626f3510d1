package framework

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
)

// AuditEvents returns the events of the plane's audit log (AuditLogFile, the same policy as the
// webhook) that match, in the order kube-apiserver wrote them.
func (p *Plane) AuditEvents(match func(*auditv1.Event) bool) ([]*auditv1.Event, error) {
	f, err := os.Open(filepath.Join(p.Dir, AuditLogFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []*auditv1.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var ev auditv1.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue // a line being written
		}
		if match(&ev) {
			out = append(out, &ev)
		}
	}
	return out, sc.Err()
}

// LastAuditID waits until the audit log holds a ResponseComplete event that matches and returns the
// audit ID of the last one.
func (p *Plane) LastAuditID(ctx context.Context, match func(*auditv1.Event) bool) (string, error) {
	var id string
	err := WaitFor(ctx, 30*time.Second, func() error {
		evs, err := p.AuditEvents(func(ev *auditv1.Event) bool { return ev.Stage == auditv1.StageResponseComplete && match(ev) })
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return fmt.Errorf("no matching event in %s yet", AuditLogFile)
		}
		id = string(evs[len(evs)-1].AuditID)
		return nil
	})
	return id, err
}

// WaitAuditDropped waits until kube-apiserver has given up delivering the audit event auditID to its
// webhook: it logs "Error in audit plugin 'webhook'" with the impacted events, one "AUDIT: id=..." line
// each, once its retries are spent. From then on the change reaches kubehistory only through the
// reconciler.
func (p *Plane) WaitAuditDropped(ctx context.Context, timeout time.Duration, auditID string) error {
	needle := fmt.Sprintf("AUDIT: id=%q", auditID)
	logPath := filepath.Join(p.Dir, "kube-apiserver.log")
	return WaitFor(ctx, timeout, func() error {
		data, err := os.ReadFile(logPath)
		if err != nil {
			return err
		}
		if !strings.Contains(string(data), needle) {
			return fmt.Errorf("kube-apiserver has not dropped audit event %s yet (no %q in %s)", auditID, needle, logPath)
		}
		return nil
	})
}
