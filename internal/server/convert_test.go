package server

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/registry"
)

// TestObjectInfoCarriesEveryField: the ObjectInfo built in one
// allocation with its timestamps says what one built field by field
// does, for an object with every field set and for one with none of the
// optional ones.
func TestObjectInfoCarriesEveryField(t *testing.T) {
	at := time.Date(2026, 12, 2, 1, 2, 3, 456789, time.UTC)
	full := registry.Info{
		Handle: "obj_x", Size: 5, ContentType: "text/plain", Labels: map[string]string{"a": "b"},
		State: registry.Lingering, Pins: 2, Created: at, Accessed: at.Add(time.Second), StateSince: at.Add(2 * time.Second),
		Linger: time.Minute, LingerUntil: at.Add(time.Hour), SoftCached: true, WeakGCCycles: 3, SuspectedLeak: true,
	}
	bare := registry.Info{Handle: "obj_y", State: registry.Weak, Created: at, Accessed: at, StateSince: at}
	for _, in := range []registry.Info{full, bare} {
		want := &registryv1.ObjectInfo{
			Handle: in.Handle, Size: in.Size, ContentType: in.ContentType, Labels: in.Labels,
			State: stateToProto[in.State], PinCount: int32(in.Pins),
			CreateTime: timestamppb.New(in.Created), AccessTime: timestamppb.New(in.Accessed), StateTime: timestamppb.New(in.StateSince),
			SoftCached: in.SoftCached, WeakGcCycles: in.WeakGCCycles, SuspectedLeak: in.SuspectedLeak,
		}
		if in.Linger > 0 {
			want.Linger = durationpb.New(in.Linger)
		}
		if !in.LingerUntil.IsZero() {
			want.LingerUntil = timestamppb.New(in.LingerUntil)
		}
		for name, got := range map[string]*registryv1.ObjectInfo{
			"infoToProto": infoToProto(in),
			"Put":         putResponse(in).GetInfo(),
			"Stat":        statResponse(in).GetInfo(),
		} {
			if !proto.Equal(got, want) {
				t.Errorf("%s(%s) = %v, want %v", name, in.Handle, got, want)
			}
		}
	}
	if infoToProto(registry.Info{}) != nil || statResponse(registry.Info{}).GetInfo() != nil {
		t.Error("an Info without a handle became an ObjectInfo")
	}
}

// TestResolveAnswerIsOneAllocation: a Resolve hit's answer, with its
// ObjectInfo and three timestamps, is allocated at once.
func TestResolveAnswerIsOneAllocation(t *testing.T) {
	e := newEnv(t, nil)
	lc := e.openLease(t, "keeper", 0)
	h := e.put(t, "kept", lc.id)
	obj, err := e.reg.Resolve(h)
	if err != nil {
		t.Fatal(err)
	}
	resp := resolveResponse(obj)
	if string(resp.GetData()) != "kept" || resp.GetInfo().GetHandle() != h || resp.GetInfo().GetCreateTime().AsTime().IsZero() {
		t.Fatalf("answer %v", resp)
	}
	if n := testing.AllocsPerRun(100, func() { resolveResponse(obj) }); n != 1 {
		t.Errorf("a Resolve answer takes %v allocations, want 1", n)
	}
}
