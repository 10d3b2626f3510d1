package changes

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/apis/history"
	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
)

// servedJSON converts a stored change the way the API serves it (storage -> internal -> v1alpha1) and
// encodes it.
func servedJSON(t *testing.T, in *change.Fields) []byte {
	t.Helper()
	var internal history.Change
	convertChange(in, &internal)
	var external historyv1alpha1.Change
	if err := historyv1alpha1.Convert_history_Change_To_v1alpha1_Change(&internal, &external, nil); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(&external)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A record as main wrote it (pkg/change/testdata) is served with the same fields and values: v1alpha1
// shows what version 1 of the storage format holds.
func TestConvertStoredRecord(t *testing.T) {
	data, err := os.ReadFile("../../../change/testdata/record-v1-main.json")
	if err != nil {
		t.Fatal(err)
	}
	var rec change.Record
	if err := change.DecodeRecord(data, &rec); err != nil {
		t.Fatal(err)
	}
	if got := servedJSON(t, &rec.Fields); !bytes.Equal(got, data) {
		t.Errorf("served\n%s\nstored\n%s", got, data)
	}
}

// Every field of the storage format reaches the API: a field added to change.Fields and not converted
// fails here.
func TestConvertEveryField(t *testing.T) {
	var in change.Fields
	fillValue(reflect.ValueOf(&in).Elem(), "x")
	want, err := json.Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	if got := servedJSON(t, &in); !bytes.Equal(got, want) {
		t.Errorf("served\n%s\nstored\n%s", got, want)
	}
}

// fillValue sets every field of v to a non-zero value derived from s.
func fillValue(v reflect.Value, s string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(7)
	case reflect.Slice:
		sl := reflect.MakeSlice(v.Type(), 2, 2)
		fillValue(sl.Index(0), s+"-0")
		fillValue(sl.Index(1), s+"-1")
		v.Set(sl)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fillValue(p.Elem(), s)
		v.Set(p)
	case reflect.Struct:
		switch v.Type() {
		case reflect.TypeOf(metav1.MicroTime{}):
			v.Set(reflect.ValueOf(metav1.NewMicroTime(time.Date(2026, 11, 26, 16, 4, 5, 123456000, time.UTC))))
			return
		case reflect.TypeOf(metav1.Time{}):
			v.Set(reflect.ValueOf(metav1.NewTime(time.Date(2026, 11, 26, 16, 4, 5, 0, time.UTC))))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fillValue(v.Field(i), s+"."+v.Type().Field(i).Name)
			}
		}
	}
}
