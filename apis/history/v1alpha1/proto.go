package v1alpha1

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Protobuf for the history types, so that clients get them as they get built-in objects from
// kube-apiserver (client-go's typed clients ask for protobuf first). Written by hand on protowire rather
// than generated with go-to-protobuf, which needs protoc; the wire format follows Kubernetes'
// conventions (as in k8s.io/api's generated.proto): TypeMeta travels in the runtime.Unknown envelope,
// metadata is field 1, list items field 2, embedded metav1 types use their own marshalling. Field
// numbers are part of the API: never reuse or renumber one. TestProtobufRoundTrip fills every field by
// reflection and checks that it survives, and FuzzProtobufUnmarshal that no input panics. The change
// lists carry the protobuf struct tags of metadata and items (types.go): apimachinery's serializer
// checks exactly those before it streams a list item by item, as it does built-in lists.
//
// message ChangedObject { group = 1; version = 2; resource = 3; kind = 4; namespace = 5; name = 6;
//   uid = 7; resourceVersion = 8 }
// message Impersonator { username = 1; uid = 2; repeated groups = 3 }
// message Actor { username = 1; uid = 2; repeated groups = 3; Impersonator impersonator = 4;
//   userAgent = 5; repeated sourceIPs = 6 }
// message GitLink { destination = 1; destinationNamespace = 2; repository = 3; branch = 4; commit = 5;
//   path = 6; Time committedAt = 7 }
// message Change { ChangedObject object = 1; verb = 2; Actor actor = 3; source = 4; auditID = 5;
//   changeID = 6; requestURI = 7; MicroTime changeTime = 8; GitLink git = 9; diff = 10;
//   bool diffTruncated = 11; repeated markers = 12 }
// message ResourceChange, ClusterResourceChange { ObjectMeta metadata = 1; Change change = 2 }
// message OrphanFile { path = 1; reason = 2 }
// message RepoStatus { ObjectMeta metadata = 1; RepoStatusStatus status = 14;
//   reserved 2 to 13 (the fields of the first, flat RepoStatus, now under status) }
// message RepoStatusStatus { repository = 1; branch = 2; headCommit = 3; Time lastPushTime = 4;
//   Time lastChangeTime = 5; int64 pendingChanges = 6; int64 committedChanges = 7; lastError = 8;
//   Time lastErrorTime = 9; writer = 10; repeated OrphanFile orphans = 11;
//   repeated Condition conditions = 12; int64 orphanCount = 13; Time oldestPendingTime = 14 }
// message *List { ListMeta metadata = 1; repeated items = 2 }
// (unnamed types are strings)

// protoMarshaler is what the nested metav1 types offer.
type protoMarshaler interface {
	Size() int
	MarshalToSizedBuffer([]byte) (int, error)
}

// Sizes, so that a message is written once into a buffer of the right size.

func sizeString(s string) int {
	if s == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(s))
}

func sizeStrings(ss []string) (n int) {
	for _, s := range ss {
		n += 1 + protowire.SizeBytes(len(s))
	}
	return n
}

// sizeMessage is the size of a field holding a message of size l (field numbers here are < 16).
func sizeMessage(l int) int { return 1 + protowire.SizeBytes(l) }

func sizeVarint(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func pbString(b []byte, n protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func pbStrings(b []byte, n protowire.Number, ss []string) []byte {
	for _, s := range ss {
		b = protowire.AppendTag(b, n, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b
}

func pbMessage(b []byte, n protowire.Number, m []byte) []byte {
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

// pbNested writes a metav1 message in place.
func pbNested(b []byte, n protowire.Number, m protoMarshaler) ([]byte, error) {
	l := m.Size()
	b = protowire.AppendTag(b, n, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(l))
	start := len(b)
	b = append(b, make([]byte, l)...)
	if _, err := m.MarshalToSizedBuffer(b[start:]); err != nil {
		return nil, err
	}
	return b, nil
}

// pbHeader writes the tag and length of a message field whose content the caller appends next.
func pbHeader(b []byte, n protowire.Number, l int) []byte {
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(l))
}

func pbVarint(b []byte, n protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// pbFields calls field for every field of a message: v is the content of a length-delimited field, x
// the value of a varint. Fields of other wire types are skipped.
func pbFields(data []byte, field func(n protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(data) > 0 {
		n, typ, l := protowire.ConsumeTag(data)
		if l < 0 {
			return fmt.Errorf("protobuf: %w", protowire.ParseError(l))
		}
		data = data[l:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(data)
		case protowire.VarintType:
			x, l = protowire.ConsumeVarint(data)
		default:
			l = protowire.ConsumeFieldValue(n, typ, data)
		}
		if l < 0 {
			return fmt.Errorf("protobuf: field %d: %w", n, protowire.ParseError(l))
		}
		data = data[l:]
		if typ != protowire.BytesType && typ != protowire.VarintType {
			continue
		}
		if err := field(n, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

var errWireType = errors.New("protobuf: unexpected wire type")

// want checks a field's wire type.
func want(typ, wantTyp protowire.Type) error {
	if typ != wantTyp {
		return errWireType
	}
	return nil
}

// Marshal and Unmarshal of the nested types.

func (m *ChangedObject) appendProto(b []byte) []byte {
	b = pbString(b, 1, m.Group)
	b = pbString(b, 2, m.Version)
	b = pbString(b, 3, m.Resource)
	b = pbString(b, 4, m.Kind)
	b = pbString(b, 5, m.Namespace)
	b = pbString(b, 6, m.Name)
	b = pbString(b, 7, m.UID)
	return pbString(b, 8, m.ResourceVersion)
}

func (m *ChangedObject) protoSize() int {
	return sizeString(m.Group) + sizeString(m.Version) + sizeString(m.Resource) + sizeString(m.Kind) +
		sizeString(m.Namespace) + sizeString(m.Name) + sizeString(m.UID) + sizeString(m.ResourceVersion)
}

func (m *ChangedObject) unmarshalProto(data []byte) error {
	return pbFields(data, func(n protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if n < 1 || n > 8 {
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		s := string(v)
		switch n {
		case 1:
			m.Group = s
		case 2:
			m.Version = s
		case 3:
			m.Resource = s
		case 4:
			m.Kind = s
		case 5:
			m.Namespace = s
		case 6:
			m.Name = s
		case 7:
			m.UID = s
		case 8:
			m.ResourceVersion = s
		}
		return nil
	})
}

func (m *Impersonator) appendProto(b []byte) []byte {
	b = pbString(b, 1, m.Username)
	b = pbString(b, 2, m.UID)
	return pbStrings(b, 3, m.Groups)
}

func (m *Impersonator) protoSize() int {
	return sizeString(m.Username) + sizeString(m.UID) + sizeStrings(m.Groups)
}

func (m *Impersonator) unmarshalProto(data []byte) error {
	return pbFields(data, func(n protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if n < 1 || n > 3 {
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		switch n {
		case 1:
			m.Username = string(v)
		case 2:
			m.UID = string(v)
		case 3:
			m.Groups = append(m.Groups, string(v))
		}
		return nil
	})
}

func (m *Actor) appendProto(b []byte) []byte {
	b = pbString(b, 1, m.Username)
	b = pbString(b, 2, m.UID)
	b = pbStrings(b, 3, m.Groups)
	if m.Impersonator != nil {
		b = m.Impersonator.appendProto(pbHeader(b, 4, m.Impersonator.protoSize()))
	}
	b = pbString(b, 5, m.UserAgent)
	return pbStrings(b, 6, m.SourceIPs)
}

func (m *Actor) protoSize() int {
	n := sizeString(m.Username) + sizeString(m.UID) + sizeStrings(m.Groups) + sizeString(m.UserAgent) + sizeStrings(m.SourceIPs)
	if m.Impersonator != nil {
		n += sizeMessage(m.Impersonator.protoSize())
	}
	return n
}

func (m *Actor) unmarshalProto(data []byte) error {
	return pbFields(data, func(n protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if n < 1 || n > 6 {
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		switch n {
		case 1:
			m.Username = string(v)
		case 2:
			m.UID = string(v)
		case 3:
			m.Groups = append(m.Groups, string(v))
		case 4:
			if m.Impersonator == nil {
				m.Impersonator = &Impersonator{}
			}
			return m.Impersonator.unmarshalProto(v)
		case 5:
			m.UserAgent = string(v)
		case 6:
			m.SourceIPs = append(m.SourceIPs, string(v))
		}
		return nil
	})
}

func (m *GitLink) appendProto(b []byte) ([]byte, error) {
	b = pbString(b, 1, m.Destination)
	b = pbString(b, 2, m.DestinationNamespace)
	b = pbString(b, 3, m.Repository)
	b = pbString(b, 4, m.Branch)
	b = pbString(b, 5, m.Commit)
	b = pbString(b, 6, m.Path)
	if m.CommittedAt != nil {
		return pbNested(b, 7, m.CommittedAt)
	}
	return b, nil
}

func (m *GitLink) protoSize() int {
	n := sizeString(m.Destination) + sizeString(m.DestinationNamespace) + sizeString(m.Repository) +
		sizeString(m.Branch) + sizeString(m.Commit) + sizeString(m.Path)
	if m.CommittedAt != nil {
		n += sizeMessage(m.CommittedAt.Size())
	}
	return n
}

func (m *GitLink) unmarshalProto(data []byte) error {
	return pbFields(data, func(n protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if n < 1 || n > 7 {
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		switch n {
		case 1:
			m.Destination = string(v)
		case 2:
			m.DestinationNamespace = string(v)
		case 3:
			m.Repository = string(v)
		case 4:
			m.Branch = string(v)
		case 5:
			m.Commit = string(v)
		case 6:
			m.Path = string(v)
		case 7:
			m.CommittedAt = &metav1.Time{}
			return m.CommittedAt.Unmarshal(v)
		}
		return nil
	})
}

func (m *Change) protoSize() int {
	n := sizeMessage(m.Object.protoSize()) + sizeString(string(m.Verb)) + sizeMessage(m.Actor.protoSize()) +
		sizeString(string(m.Source)) + sizeString(m.AuditID) + sizeString(m.ChangeID) + sizeString(m.RequestURI) +
		sizeMessage(m.ChangeTime.Size()) + sizeMessage(m.Git.protoSize()) + sizeString(m.Diff)
	if m.DiffTruncated {
		n += sizeVarint(1)
	}
	for _, mk := range m.Markers {
		n += 1 + protowire.SizeBytes(len(mk))
	}
	return n
}

func (m *Change) appendProto(b []byte) ([]byte, error) {
	b = m.Object.appendProto(pbHeader(b, 1, m.Object.protoSize()))
	b = pbString(b, 2, string(m.Verb))
	b = m.Actor.appendProto(pbHeader(b, 3, m.Actor.protoSize()))
	b = pbString(b, 4, string(m.Source))
	b = pbString(b, 5, m.AuditID)
	b = pbString(b, 6, m.ChangeID)
	b = pbString(b, 7, m.RequestURI)
	b, err := pbNested(b, 8, &m.ChangeTime)
	if err != nil {
		return nil, err
	}
	if b, err = m.Git.appendProto(pbHeader(b, 9, m.Git.protoSize())); err != nil {
		return nil, err
	}
	b = pbString(b, 10, m.Diff)
	if m.DiffTruncated {
		b = pbVarint(b, 11, 1)
	}
	for _, mk := range m.Markers {
		b = protowire.AppendTag(b, 12, protowire.BytesType)
		b = protowire.AppendString(b, string(mk))
	}
	return b, nil
}

func (m *Change) unmarshalProto(data []byte) error {
	return pbFields(data, func(n protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if n < 1 || n > 12 {
			return nil
		}
		if n == 11 {
			if err := want(typ, protowire.VarintType); err != nil {
				return err
			}
			m.DiffTruncated = x != 0
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		switch n {
		case 1:
			return m.Object.unmarshalProto(v)
		case 2:
			m.Verb = ChangeVerb(v)
		case 3:
			return m.Actor.unmarshalProto(v)
		case 4:
			m.Source = ChangeSource(v)
		case 5:
			m.AuditID = string(v)
		case 6:
			m.ChangeID = string(v)
		case 7:
			m.RequestURI = string(v)
		case 8:
			return m.ChangeTime.Unmarshal(v)
		case 9:
			return m.Git.unmarshalProto(v)
		case 10:
			m.Diff = string(v)
		case 12:
			m.Markers = append(m.Markers, ChangeMarker(v))
		}
		return nil
	})
}

// sizeChangeObject, appendChangeObject and marshalChangeObjectTo write the shape ResourceChange and
// ClusterResourceChange share.
func sizeChangeObject(meta *metav1.ObjectMeta, c *Change) int {
	return sizeMessage(meta.Size()) + sizeMessage(c.protoSize())
}

func appendChangeObject(b []byte, meta *metav1.ObjectMeta, c *Change) ([]byte, error) {
	b, err := pbNested(b, 1, meta)
	if err != nil {
		return nil, err
	}
	return c.appendProto(pbHeader(b, 2, c.protoSize()))
}

// marshalChangeObjectTo writes the message to the start of data (at least sizeChangeObject long), in
// place: the serializer's streaming list encoding hands every item a reused buffer of its Size.
func marshalChangeObjectTo(data []byte, meta *metav1.ObjectMeta, c *Change) (int, error) {
	b, err := appendChangeObject(data[:0:len(data)], meta, c)
	if err != nil {
		return 0, err
	}
	if len(b) > 0 && &b[0] != &data[0] {
		return 0, fmt.Errorf("message of %d bytes does not fit the %d bytes given", len(b), len(data))
	}
	return len(b), nil
}

func unmarshalChangeObject(data []byte, meta *metav1.ObjectMeta, c *Change) error {
	return pbFields(data, func(n protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch n {
		case 1:
			if err := want(typ, protowire.BytesType); err != nil {
				return err
			}
			return meta.Unmarshal(v)
		case 2:
			if err := want(typ, protowire.BytesType); err != nil {
				return err
			}
			return c.unmarshalProto(v)
		}
		return nil
	})
}

// sizedMarshaler is a message that knows its size and writes itself in place.
type sizedMarshaler interface {
	Size() int
	MarshalTo([]byte) (int, error)
}

// marshal writes m into a buffer of its size.
func marshal(m sizedMarshaler) ([]byte, error) {
	b := make([]byte, m.Size())
	n, err := m.MarshalTo(b)
	if err != nil {
		return nil, err
	}
	return b[:n], nil
}

// marshalList writes a list: metadata, then each item's message, in one buffer of the right size.
func marshalList[T any, PT interface {
	*T
	sizedMarshaler
}](meta *metav1.ListMeta, items []T) ([]byte, error) {
	sizes := make([]int, len(items))
	total := sizeMessage(meta.Size())
	for i := range items {
		sizes[i] = PT(&items[i]).Size()
		total += sizeMessage(sizes[i])
	}
	b, err := pbNested(make([]byte, 0, total), 1, meta)
	if err != nil {
		return nil, err
	}
	for i := range items {
		b = pbHeader(b, 2, sizes[i])
		n, err := PT(&items[i]).MarshalTo(b[len(b) : len(b)+sizes[i]])
		if err != nil {
			return nil, err
		}
		b = b[:len(b)+n]
	}
	return b, nil
}

// encodedMessage is a message encoded already.
type encodedMessage []byte

func (m *encodedMessage) Size() int                          { return len(*m) }
func (m *encodedMessage) MarshalTo(data []byte) (int, error) { return copy(data, *m), nil }

// unmarshalList reads a list: metadata, and each item appended to items.
func unmarshalList[T any, PT interface {
	*T
	Unmarshal([]byte) error
}](data []byte, meta *metav1.ListMeta, items *[]T) error {
	return pbFields(data, func(n protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if n != 1 && n != 2 {
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		if n == 1 {
			return meta.Unmarshal(v)
		}
		var item T
		*items = append(*items, item)
		return PT(&(*items)[len(*items)-1]).Unmarshal(v)
	})
}

// ResourceChange

// Marshal implements the protobuf marshalling of the apimachinery protobuf serializer.
func (m *ResourceChange) Marshal() ([]byte, error) { return marshal(m) }

// Size is the length of the message (apimachinery's serializer asks it before MarshalTo).
func (m *ResourceChange) Size() int { return sizeChangeObject(&m.ObjectMeta, &m.Change) }

// MarshalTo writes the message to the start of data, which holds at least Size() bytes.
func (m *ResourceChange) MarshalTo(data []byte) (int, error) {
	return marshalChangeObjectTo(data, &m.ObjectMeta, &m.Change)
}

// Unmarshal implements the protobuf unmarshalling of the apimachinery protobuf serializer.
func (m *ResourceChange) Unmarshal(data []byte) error {
	return unmarshalChangeObject(data, &m.ObjectMeta, &m.Change)
}

// Reset clears m before Unmarshal.
func (m *ResourceChange) Reset() { *m = ResourceChange{} }

// ProtoMessage marks a protobuf message.
func (*ResourceChange) ProtoMessage() {}

// Marshal implements the protobuf marshalling of the apimachinery protobuf serializer.
func (m *ResourceChangeList) Marshal() ([]byte, error) { return marshalList(&m.ListMeta, m.Items) }

// Unmarshal implements the protobuf unmarshalling of the apimachinery protobuf serializer.
func (m *ResourceChangeList) Unmarshal(data []byte) error {
	return unmarshalList(data, &m.ListMeta, &m.Items)
}

// Reset clears m before Unmarshal.
func (m *ResourceChangeList) Reset() { *m = ResourceChangeList{} }

// ProtoMessage marks a protobuf message.
func (*ResourceChangeList) ProtoMessage() {}

// ClusterResourceChange

// Marshal implements the protobuf marshalling of the apimachinery protobuf serializer.
func (m *ClusterResourceChange) Marshal() ([]byte, error) { return marshal(m) }

// Size is the length of the message (apimachinery's serializer asks it before MarshalTo).
func (m *ClusterResourceChange) Size() int { return sizeChangeObject(&m.ObjectMeta, &m.Change) }

// MarshalTo writes the message to the start of data, which holds at least Size() bytes.
func (m *ClusterResourceChange) MarshalTo(data []byte) (int, error) {
	return marshalChangeObjectTo(data, &m.ObjectMeta, &m.Change)
}

// Unmarshal implements the protobuf unmarshalling of the apimachinery protobuf serializer.
func (m *ClusterResourceChange) Unmarshal(data []byte) error {
	return unmarshalChangeObject(data, &m.ObjectMeta, &m.Change)
}

// Reset clears m before Unmarshal.
func (m *ClusterResourceChange) Reset() { *m = ClusterResourceChange{} }

// ProtoMessage marks a protobuf message.
func (*ClusterResourceChange) ProtoMessage() {}

// Marshal implements the protobuf marshalling of the apimachinery protobuf serializer.
func (m *ClusterResourceChangeList) Marshal() ([]byte, error) {
	return marshalList(&m.ListMeta, m.Items)
}

// Unmarshal implements the protobuf unmarshalling of the apimachinery protobuf serializer.
func (m *ClusterResourceChangeList) Unmarshal(data []byte) error {
	return unmarshalList(data, &m.ListMeta, &m.Items)
}

// Reset clears m before Unmarshal.
func (m *ClusterResourceChangeList) Reset() { *m = ClusterResourceChangeList{} }

// ProtoMessage marks a protobuf message.
func (*ClusterResourceChangeList) ProtoMessage() {}

// RepoStatus

func (m *OrphanFile) appendProto(b []byte) []byte {
	b = pbString(b, 1, m.Path)
	return pbString(b, 2, string(m.Reason))
}

func (m *OrphanFile) unmarshalProto(data []byte) error {
	return pbFields(data, func(n protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if n < 1 || n > 2 {
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		if n == 1 {
			m.Path = string(v)
		} else {
			m.Reason = OrphanReason(v)
		}
		return nil
	})
}

// Marshal implements the protobuf marshalling of the apimachinery protobuf serializer.
func (m *RepoStatus) Marshal() ([]byte, error) {
	b, err := pbNested(nil, 1, &m.ObjectMeta)
	if err != nil {
		return nil, err
	}
	st, err := m.Status.appendProto(nil)
	if err != nil {
		return nil, err
	}
	return pbMessage(b, 14, st), nil
}

func (m *RepoStatusStatus) appendProto(b []byte) ([]byte, error) {
	var err error
	b = pbString(b, 1, m.Repository)
	b = pbString(b, 2, m.Branch)
	b = pbString(b, 3, m.HeadCommit)
	for _, t := range []struct {
		n protowire.Number
		t *metav1.Time
	}{{4, m.LastPushTime}, {5, m.LastChangeTime}} {
		if t.t != nil {
			if b, err = pbNested(b, t.n, t.t); err != nil {
				return nil, err
			}
		}
	}
	b = pbVarint(b, 6, uint64(m.PendingChanges))
	b = pbVarint(b, 7, uint64(m.CommittedChanges))
	b = pbString(b, 8, m.LastError)
	if m.LastErrorTime != nil {
		if b, err = pbNested(b, 9, m.LastErrorTime); err != nil {
			return nil, err
		}
	}
	b = pbString(b, 10, m.Writer)
	for i := range m.Orphans {
		b = pbMessage(b, 11, m.Orphans[i].appendProto(nil))
	}
	for i := range m.Conditions {
		if b, err = pbNested(b, 12, &m.Conditions[i]); err != nil {
			return nil, err
		}
	}
	b = pbVarint(b, 13, uint64(m.OrphanCount))
	if m.OldestPendingTime != nil {
		if b, err = pbNested(b, 14, m.OldestPendingTime); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Unmarshal implements the protobuf unmarshalling of the apimachinery protobuf serializer.
func (m *RepoStatus) Unmarshal(data []byte) error {
	return pbFields(data, func(n protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if n != 1 && n != 14 {
			return nil // 2 to 13: the flat fields of the first RepoStatus, no longer read
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		if n == 1 {
			return m.ObjectMeta.Unmarshal(v)
		}
		return m.Status.unmarshalProto(v)
	})
}

func (m *RepoStatusStatus) unmarshalProto(data []byte) error {
	return pbFields(data, func(n protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if n < 1 || n > 14 {
			return nil
		}
		switch n {
		case 6, 7, 13:
			if err := want(typ, protowire.VarintType); err != nil {
				return err
			}
			switch n {
			case 6:
				m.PendingChanges = int64(x)
			case 7:
				m.CommittedChanges = int64(x)
			default:
				m.OrphanCount = int64(x)
			}
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		switch n {
		case 1:
			m.Repository = string(v)
		case 2:
			m.Branch = string(v)
		case 3:
			m.HeadCommit = string(v)
		case 4:
			m.LastPushTime = &metav1.Time{}
			return m.LastPushTime.Unmarshal(v)
		case 5:
			m.LastChangeTime = &metav1.Time{}
			return m.LastChangeTime.Unmarshal(v)
		case 8:
			m.LastError = string(v)
		case 9:
			m.LastErrorTime = &metav1.Time{}
			return m.LastErrorTime.Unmarshal(v)
		case 10:
			m.Writer = string(v)
		case 11:
			m.Orphans = append(m.Orphans, OrphanFile{})
			return m.Orphans[len(m.Orphans)-1].unmarshalProto(v)
		case 12:
			m.Conditions = append(m.Conditions, metav1.Condition{})
			return m.Conditions[len(m.Conditions)-1].Unmarshal(v)
		case 14:
			m.OldestPendingTime = &metav1.Time{}
			return m.OldestPendingTime.Unmarshal(v)
		}
		return nil
	})
}

// Reset clears m before Unmarshal.
func (m *RepoStatus) Reset() { *m = RepoStatus{} }

// ProtoMessage marks a protobuf message.
func (*RepoStatus) ProtoMessage() {}

// Marshal implements the protobuf marshalling of the apimachinery protobuf serializer.
func (m *RepoStatusList) Marshal() ([]byte, error) {
	// RepoStatus has no Size of its own (a handful per list): its items are encoded first.
	items := make([]encodedMessage, len(m.Items))
	for i := range m.Items {
		var err error
		if items[i], err = m.Items[i].Marshal(); err != nil {
			return nil, err
		}
	}
	return marshalList(&m.ListMeta, items)
}

// Unmarshal implements the protobuf unmarshalling of the apimachinery protobuf serializer.
func (m *RepoStatusList) Unmarshal(data []byte) error {
	return unmarshalList(data, &m.ListMeta, &m.Items)
}

// Reset clears m before Unmarshal.
func (m *RepoStatusList) Reset() { *m = RepoStatusList{} }

// ProtoMessage marks a protobuf message.
func (*RepoStatusList) ProtoMessage() {}
