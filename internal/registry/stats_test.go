package registry

import (
	"bytes"
	"errors"
	"maps"
	"testing"

	"github.com/weakref/registry/internal/handle"
)

func TestResolveCountsHitsAndMissesByReason(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	by := newHolder(r)
	live, _ := put(t, r, 10, 1, Meta{}, &by)
	doomed, _ := put(t, r, 20, 2, Meta{}, nil)
	deleted, _ := put(t, r, 30, 3, Meta{}, nil)
	if _, _, err := r.Delete(deleted.ID, false); err != nil {
		t.Fatal(err)
	}
	r.Collect()

	codecWith := func(key []byte, node uint16, epoch uint64) *handle.Codec {
		c, err := handle.NewCodec(handle.Config{Key: key, Node: node, Epoch: epoch})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	_, unknown := codecWith(bytes.Repeat([]byte{7}, 32), testNode, testEpoch).New(handle.Object)
	_, restarted := codecWith(testKey, testNode, testEpoch-1).New(handle.Object)
	_, foreign := codecWith(testKey, testNode+1, testEpoch).New(handle.Object)
	_, leaseID := r.codec.New(handle.Lease)

	tests := []struct {
		name   string
		h      string
		reason string // "" for a hit
		check  func(error) bool
	}{
		{name: "hit", h: live.Handle},
		{name: "second hit", h: live.Handle},
		{name: "malformed", h: "not a handle", reason: MissMalformed, check: func(err error) bool { return errors.Is(err, handle.ErrMalformed) }},
		{name: "lease id", h: leaseID, reason: MissMalformed, check: func(err error) bool { return errors.Is(err, handle.ErrMalformed) }},
		{name: "unknown", h: unknown, reason: MissUnknown, check: func(err error) bool { return errors.Is(err, handle.ErrUnknown) }},
		{name: "restarted", h: restarted, reason: MissRestarted, check: func(err error) bool {
			var re *handle.RestartedError
			return errors.As(err, &re) && re.Issued == testEpoch-1 && re.Current == testEpoch
		}},
		{name: "foreign", h: foreign, reason: MissForeign, check: func(err error) bool {
			var fe *handle.ForeignNodeError
			return errors.As(err, &fe) && fe.Node == testNode+1
		}},
		{name: "collected", h: doomed.Handle, reason: MissCollected, check: func(err error) bool { return errors.Is(err, ErrCollected) }},
		{name: "deleted", h: deleted.Handle, reason: MissDeleted, check: func(err error) bool { return errors.Is(err, ErrDeleted) }},
	}
	wantMisses := map[string]int64{}
	for _, reason := range missReasons {
		wantMisses[reason] = 0
	}
	var wantHits int64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Resolve(tt.h)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				wantHits++
			} else {
				if !tt.check(err) {
					t.Fatalf("Resolve error = %v (%T)", err, err)
				}
				if got := MissReason(err); got != tt.reason {
					t.Fatalf("MissReason(%v) = %q, want %q", err, got, tt.reason)
				}
				wantMisses[tt.reason]++
			}
			st := r.Stats()
			if st.ResolveHits != wantHits {
				t.Errorf("ResolveHits = %d, want %d", st.ResolveHits, wantHits)
			}
			if !maps.Equal(st.ResolveMisses, wantMisses) {
				t.Errorf("ResolveMisses = %v, want %v", st.ResolveMisses, wantMisses)
			}
		})
	}
	// Stat answers the same errors but is not a resolve: it counts nothing.
	before := r.Stats()
	for _, tt := range tests {
		if _, err := r.Stat(tt.h); tt.reason != "" && !tt.check(err) {
			t.Errorf("Stat(%s) error = %v", tt.name, err)
		}
	}
	after := r.Stats()
	if after.ResolveHits != before.ResolveHits || !maps.Equal(after.ResolveMisses, before.ResolveMisses) {
		t.Errorf("Stat changed the resolve counters: %d %v -> %d %v", before.ResolveHits, before.ResolveMisses, after.ResolveHits, after.ResolveMisses)
	}
	if after.Puts != 3 || after.Deleted != 1 || after.Collected != 1 || after.CollectedBytes != 20 {
		t.Errorf("Stats = puts %d, deleted %d, collected %d (%d bytes); want 3, 1, 1 (20)", after.Puts, after.Deleted, after.Collected, after.CollectedBytes)
	}
	if after.Epoch != testEpoch {
		t.Errorf("Stats.Epoch = %d, want %d", after.Epoch, testEpoch)
	}
}

func TestStatsCountObjectsAndBytesByState(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	a, b := newHolder(r), newHolder(r)
	var p1, w1 Info // a pinned put and a weak put
	type counts struct {
		pinnedN, pinnedB, weakN, weakB, pins int64
	}
	steps := []struct {
		name string
		do   func(t *testing.T)
		want counts
	}{
		{"put pinned 100", func(t *testing.T) { p1, _ = put(t, r, 100, 1, Meta{}, &a) }, counts{1, 100, 0, 0, 1}},
		{"put weak 250", func(t *testing.T) { w1, _ = put(t, r, 250, 2, Meta{}, nil) }, counts{1, 100, 1, 250, 1}},
		{"second holder pins the pinned one", func(t *testing.T) { mustPin(t, r, p1.ID, b) }, counts{1, 100, 1, 250, 2}},
		{"pin the weak one", func(t *testing.T) { mustPin(t, r, w1.ID, a) }, counts{2, 350, 0, 0, 3}},
		{"unpin one of two", func(t *testing.T) { mustUnpin(t, r, p1.ID, a) }, counts{2, 350, 0, 0, 2}},
		{"unpin the last of p1", func(t *testing.T) { mustUnpin(t, r, p1.ID, b) }, counts{1, 250, 1, 100, 1}},
		{"collect", func(t *testing.T) { r.Collect() }, counts{1, 250, 0, 0, 1}},
		{"unpin w1", func(t *testing.T) { mustUnpin(t, r, w1.ID, a) }, counts{0, 0, 1, 250, 0}},
		{"collect again", func(t *testing.T) { r.Collect() }, counts{0, 0, 0, 0, 0}},
	}
	for _, s := range steps {
		s.do(t)
		st := r.Stats()
		got := counts{st.Objects[Pinned], st.Bytes[Pinned], st.Objects[Weak], st.Bytes[Weak], st.Pins}
		if got != s.want {
			t.Fatalf("after %q: {pinned n, bytes; weak n, bytes; pins} = %v, want %v", s.name, got, s.want)
		}
		if st.Objects[Lingering] != 0 || st.Bytes[Lingering] != 0 {
			t.Fatalf("after %q: lingering %d (%d bytes); nothing lingers", s.name, st.Objects[Lingering], st.Bytes[Lingering])
		}
	}
	if st := r.Stats(); st.Collected != 2 || st.CollectedBytes != 350 {
		t.Fatalf("collected %d (%d bytes), want 2 (350)", st.Collected, st.CollectedBytes)
	}
	assertHoldsNothing(t, r)
}

func mustPin(t testing.TB, r *Registry, id handle.ID, by Holder) Info {
	t.Helper()
	info, already, err := r.Pin(id, by)
	if err != nil || already {
		t.Fatalf("Pin = already %v, %v", already, err)
	}
	return info
}

func mustUnpin(t testing.TB, r *Registry, id handle.ID, by Holder) Info {
	t.Helper()
	info, pinned, err := r.Unpin(id, by)
	if err != nil || !pinned {
		t.Fatalf("Unpin = pinned %v, %v", pinned, err)
	}
	return info
}
