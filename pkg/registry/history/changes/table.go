package changes

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/kubehistory/kubehistory/apis/history"
)

var columns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "Name of the change record; names sort by time."},
	{Name: "Time", Type: "string", Format: "date-time", Description: "When the change was made (UTC)."},
	{Name: "Verb", Type: "string", Description: "create, update, patch, delete, seed or orphan-delete."},
	{Name: "Object", Type: "string", Description: "The changed object as resource.group/name."},
	{Name: "Actor", Type: "string", Description: "Who made the change."},
	{Name: "Commit", Type: "string", Description: "Short SHA of the Git commit that recorded it."},
	{Name: "Source", Type: "string", Priority: 1, Description: "audit or reconcile."},
	{Name: "Destination", Type: "string", Priority: 1, Description: "The GitDestination."},
	{Name: "Path", Type: "string", Priority: 1, Description: "The file in the repository."},
	{Name: "Markers", Type: "string", Priority: 1, Description: "Incomplete-record markers."},
	{Name: "Audit ID", Type: "string", Priority: 1, Description: "The request's audit ID."},
}

// ConvertToTable implements rest.TableConvertor.
func (r *REST) ConvertToTable(_ context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{}
	opts, _ := tableOptions.(*metav1.TableOptions)
	if opts == nil || !opts.NoHeaders {
		table.ColumnDefinitions = columns
	}
	addRow := func(obj runtime.Object, m *metav1.ObjectMeta, c *history.Change) {
		table.Rows = append(table.Rows, metav1.TableRow{
			Object: runtime.RawExtension{Object: obj},
			Cells: []interface{}{
				m.Name,
				c.ChangeTime.UTC().Format(time.RFC3339),
				string(c.Verb),
				objectColumn(&c.Object),
				actorColumn(&c.Actor),
				shortCommit(c.Git.Commit),
				string(c.Source),
				c.Git.Destination,
				c.Git.Path,
				markersColumn(c.Markers),
				c.AuditID,
			},
		})
	}
	switch t := object.(type) {
	case *history.ResourceChange:
		addRow(t, &t.ObjectMeta, &t.Change)
	case *history.ClusterResourceChange:
		addRow(t, &t.ObjectMeta, &t.Change)
	case *history.ResourceChangeList:
		for i := range t.Items {
			addRow(&t.Items[i], &t.Items[i].ObjectMeta, &t.Items[i].Change)
		}
	case *history.ClusterResourceChangeList:
		for i := range t.Items {
			addRow(&t.Items[i], &t.Items[i].ObjectMeta, &t.Items[i].Change)
		}
	default:
		return nil, fmt.Errorf("unexpected object %T", object)
	}
	if l, err := meta.ListAccessor(object); err == nil {
		table.ResourceVersion = l.GetResourceVersion()
		table.Continue = l.GetContinue()
		table.RemainingItemCount = l.GetRemainingItemCount()
	} else if m, err := meta.Accessor(object); err == nil {
		table.ResourceVersion = m.GetResourceVersion()
	}
	return table, nil
}

func objectColumn(o *history.ChangedObject) string {
	res := o.Resource
	if o.Group != "" {
		res += "." + o.Group
	}
	return res + "/" + o.Name
}

func actorColumn(a *history.Actor) string {
	name := a.Username
	if name == "" {
		name = "<unknown>"
	}
	if a.Impersonator != nil {
		name += " (via " + a.Impersonator.Username + ")"
	}
	return name
}

func shortCommit(sha string) string {
	if len(sha) > 8 {
		return sha[:8]
	}
	if sha == "" {
		return "<pending>"
	}
	return sha
}

func markersColumn(m []history.ChangeMarker) string {
	if len(m) == 0 {
		return "<none>"
	}
	s := make([]string, len(m))
	for i := range m {
		s[i] = string(m[i])
	}
	return strings.Join(s, ",")
}
