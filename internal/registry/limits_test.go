package registry

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// wantLimit checks that err is a *LimitError naming limit, with max and
// want.
func wantLimit(t testing.TB, err error, limit string, ceiling, want int64) {
	t.Helper()
	var le *LimitError
	if !errors.As(err, &le) {
		t.Fatalf("error = %v (%T); want *LimitError %s", err, err, limit)
	}
	if *le != (LimitError{Limit: limit, Max: ceiling, Want: want}) {
		t.Fatalf("LimitError = %+v; want {%s %d %d}", *le, limit, ceiling, want)
	}
}

// wantUnchanged checks that the registry's figures did not move.
func wantUnchanged(t testing.TB, r *Registry, before Stats) {
	t.Helper()
	if after := statsSnapshot(r); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused request changed the stats:\nbefore %+v\nafter  %+v", before, after)
	}
	if n := r.mapLen(); int64(n) != before.Objects[Pinned]+before.Objects[Weak] {
		t.Fatalf("shard maps hold %d entries, stats say %d", n, before.Objects[Pinned]+before.Objects[Weak])
	}
}

func TestPutOverMaxObjectBytesIsRefusedAndStoresNothing(t *testing.T) {
	r := newRegistry(t, Config{MaxObjectBytes: 1000})
	by := newHolder(r)
	sub, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	before := statsSnapshot(r)
	for _, holder := range []*Holder{nil, &by} {
		_, err := r.Put(newPayload(1001, 1), Meta{}, holder)
		wantLimit(t, err, LimitObjectSize, 1000, 1001)
		wantUnchanged(t, r, before)
	}
	noEvent(t, sub)
	if st := r.Stats(); st.MaxObjectBytes != 1000 {
		t.Fatalf("Stats.MaxObjectBytes = %d, want 1000", st.MaxObjectBytes)
	}
	// The limit itself is allowed.
	put(t, r, 1000, 1, Meta{}, &by)
}

func TestPinnedBytesLimit(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{MaxPinnedBytes: 100})
	a, b := newHolder(r), newHolder(r)
	p60, _ := put(t, r, 60, 1, Meta{}, &a)

	before := statsSnapshot(r)
	_, err := r.Put(newPayload(41, 2), Meta{}, &a)
	wantLimit(t, err, LimitPinnedBytes, 100, 101)
	wantUnchanged(t, r, before)

	// Unpinned bytes are not pinned bytes.
	w50, want50 := put(t, r, 50, 3, Meta{}, nil)
	before = statsSnapshot(r)
	_, _, err = r.Pin(w50.ID, b)
	wantLimit(t, err, LimitPinnedBytes, 100, 110)
	wantUnchanged(t, r, before)
	if info, err := r.Stat(w50.Handle); err != nil || info.State != Weak || info.Pins != 0 {
		t.Fatalf("after a refused Pin: %v with %d pins, %v; want WEAK with 0", info.State, info.Pins, err)
	}

	// An object counts once however many leases pin it.
	if info := mustPin(t, r, p60.ID, b); info.Pins != 2 {
		t.Fatalf("second pin: %d pins, want 2", info.Pins)
	}
	// Up to the limit exactly.
	put(t, r, 40, 4, Meta{}, &b)
	if st := r.Stats(); st.Bytes[Pinned] != 100 || st.MaxPinnedBytes != 100 {
		t.Fatalf("pinned bytes %d (max %d), want 100 (100)", st.Bytes[Pinned], st.MaxPinnedBytes)
	}
	// Releasing pinned bytes makes room again.
	mustUnpin(t, r, p60.ID, a)
	mustUnpin(t, r, p60.ID, b)
	mustPin(t, r, w50.ID, b)
	mustResolve(t, r, w50.Handle, want50)
	if st := r.Stats(); st.Bytes[Pinned] != 90 {
		t.Fatalf("pinned bytes %d, want 90", st.Bytes[Pinned])
	}
}

func TestPutOfEmptyPayloadIsRefused(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	before := statsSnapshot(r)
	for _, data := range [][]byte{nil, {}} {
		for _, holder := range []*Holder{nil, &by} {
			if _, err := r.Put(data, Meta{}, holder); !errors.Is(err, ErrPayloadEmpty) {
				t.Fatalf("Put(%#v): %v; want ErrPayloadEmpty", data, err)
			}
			wantUnchanged(t, r, before)
		}
	}
}

func TestLabels(t *testing.T) {
	many := func(n int) map[string]string {
		m := make(map[string]string, n)
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}
	tests := []struct {
		name    string
		labels  map[string]string
		wantErr bool
		wantKey string // the key the error names
	}{
		{name: "none", labels: nil},
		{name: "empty map", labels: map[string]string{}},
		{name: "usual", labels: map[string]string{"app": "web", "team": "a-b_c.d/e", "empty": ""}},
		{name: "every allowed key character", labels: map[string]string{"azAZ09._/-": "ok"}},
		{name: "63-char key", labels: map[string]string{strings.Repeat("k", 63): "v"}},
		{name: "255-byte value", labels: map[string]string{"k": strings.Repeat("v", 255)}},
		{name: "UTF-8 value", labels: map[string]string{"k": "héllo, 世界"}},
		{name: "64 labels", labels: many(64)},
		{name: "empty key", labels: map[string]string{"": "v"}, wantErr: true, wantKey: ""},
		{name: "64-char key", labels: map[string]string{strings.Repeat("k", 64): "v"}, wantErr: true, wantKey: strings.Repeat("k", 64)},
		{name: "space in key", labels: map[string]string{"a b": "v"}, wantErr: true, wantKey: "a b"},
		{name: "colon in key", labels: map[string]string{"a:b": "v"}, wantErr: true, wantKey: "a:b"},
		{name: "non-ASCII key", labels: map[string]string{"é": "v"}, wantErr: true, wantKey: "é"},
		{name: "256-byte value", labels: map[string]string{"k": strings.Repeat("v", 256)}, wantErr: true, wantKey: "k"},
		{name: "invalid UTF-8 value", labels: map[string]string{"k": "a\xffb"}, wantErr: true, wantKey: "k"},
		{name: "65 labels", labels: many(65), wantErr: true, wantKey: ""},
	}
	r := newRegistry(t, Config{})
	by := newHolder(r)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateLabels(tt.labels)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("ValidateLabels: %v", err)
				}
				info, _ := put(t, r, 8, 1, Meta{Labels: tt.labels}, &by)
				if !reflect.DeepEqual(info.Labels, tt.labels) {
					t.Fatalf("Put kept labels %v, want %v", info.Labels, tt.labels)
				}
				return
			}
			var le *LabelError
			if !errors.As(err, &le) {
				t.Fatalf("ValidateLabels = %v (%T); want *LabelError", err, err)
			}
			if le.Key != tt.wantKey || le.Reason == "" {
				t.Fatalf("LabelError = %+v; want key %q and a reason", *le, tt.wantKey)
			}
			before := statsSnapshot(r)
			_, err = r.Put(newPayload(8, 1), Meta{Labels: tt.labels}, &by)
			if !errors.As(err, &le) {
				t.Fatalf("Put = %v; want *LabelError", err)
			}
			wantUnchanged(t, r, before)
		})
	}
}

// TestWatchersAreBounded: with MaxWatchers set, one subscription more is
// refused with WATCHER_LIMIT, however it is asked for, and closing one
// makes room again. Each open one may hold WatchBuffer events: the limit
// bounds their memory.
func TestWatchersAreBounded(t *testing.T) {
	r := newRegistry(t, Config{MaxWatchers: 2})
	info, err := r.Put(newPayload(64, 1), Meta{Linger: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Watch([]handle.ID{info.ID})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for name, try := range map[string]func() (*Subscription, error){
		"WatchAll":     func() (*Subscription, error) { return r.WatchAll() },
		"WatchAllFrom": func() (*Subscription, error) { return r.WatchAllFrom(1) },
		"Watch":        func() (*Subscription, error) { return r.Watch([]handle.ID{info.ID}) },
		"WatchFrom":    func() (*Subscription, error) { return r.WatchFrom([]handle.ID{info.ID}, 1) },
	} {
		_, err := try()
		var limit *LimitError
		if !errors.As(err, &limit) || limit.Limit != LimitWatchers || limit.Max != 2 || limit.Want != 3 {
			t.Errorf("%s with 2 of 2 open: %v, want a WATCHER_LIMIT LimitError", name, err)
		}
	}
	a.Close()
	c, err := r.WatchAll()
	if err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	c.Close()
}
