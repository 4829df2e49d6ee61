package registry

import (
	"bytes"
	"encoding/base64"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

func TestListPagesThroughEveryObjectOnce(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	const n = 250
	want := make(map[handle.ID]bool, n)
	for i := range n {
		info, _ := put(t, r, 8, byte(i), Meta{}, &by)
		want[info.ID] = true
	}
	seen := make(map[handle.ID]bool, n)
	var prev handle.ID
	token := ""
	var sizes []int
	for page := 0; ; page++ {
		if page > n/100+1 {
			t.Fatalf("more pages than %d objects need", n)
		}
		infos, next, err := r.List(Filter{}, token, 100)
		if err != nil {
			t.Fatalf("List page %d: %v", page, err)
		}
		sizes = append(sizes, len(infos))
		for _, in := range infos {
			if !want[in.ID] {
				t.Fatalf("List returned an object never put: %x", in.ID)
			}
			if seen[in.ID] {
				t.Fatalf("List returned %x twice", in.ID)
			}
			if len(seen) > 0 && bytes.Compare(in.ID[:], prev[:]) <= 0 {
				t.Fatalf("List out of ID order: %x after %x", in.ID, prev)
			}
			seen[in.ID] = true
			prev = in.ID
		}
		if next == "" {
			break
		}
		token = next
	}
	if len(seen) != n {
		t.Fatalf("List returned %d objects in all, want %d", len(seen), n)
	}
	if !slices.Equal(sizes, []int{100, 100, 50}) {
		t.Fatalf("page sizes = %v, want [100 100 50]", sizes)
	}
}

func TestListPageSizeBoundaries(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	for i := range 150 {
		put(t, r, 8, byte(i), Meta{}, &by)
	}
	tests := []struct {
		name     string
		limit    int
		wantLen  int
		wantNext bool
	}{
		{"zero means 100", 0, 100, true},
		{"negative means 100", -5, 100, true},
		{"one", 1, 1, true},
		{"exactly all", 150, 150, false},
		{"more than all", 1000, 150, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			infos, next, err := r.List(Filter{}, "", tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(infos) != tt.wantLen || (next != "") != tt.wantNext {
				t.Fatalf("List(limit %d) = %d objects, next %q; want %d, next %v", tt.limit, len(infos), next, tt.wantLen, tt.wantNext)
			}
			if tt.wantNext {
				last := infos[len(infos)-1].ID
				if id, err := r.codec.Parse(handle.PageToken, next); err != nil || id != last {
					t.Fatalf("next token %q does not name the page's last object", next)
				}
			}
		})
	}
}

func TestListFilters(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	a, b := newHolder(r), newHolder(r)
	pa, _ := put(t, r, 8, 1, Meta{Labels: map[string]string{"team": "a", "env": "prod"}}, &a)
	pab, _ := put(t, r, 8, 2, Meta{Labels: map[string]string{"team": "a", "env": "dev"}}, &a)
	mustPin(t, r, pab.ID, b)
	pb, _ := put(t, r, 8, 3, Meta{Labels: map[string]string{"team": "b"}}, &b)
	w, _ := put(t, r, 8, 4, Meta{Labels: map[string]string{"team": "a", "env": "prod"}}, nil)
	gone, _ := put(t, r, 8, 5, Meta{Labels: map[string]string{"team": "a"}}, nil)
	if _, _, err := r.Delete(gone.ID, false); err != nil {
		t.Fatal(err)
	}
	strangerID, _ := r.codec.New(handle.Lease)

	tests := []struct {
		name   string
		filter Filter
		want   []Info
	}{
		{"all", Filter{}, []Info{pa, pab, pb, w}},
		{"pinned", Filter{State: Pinned}, []Info{pa, pab, pb}},
		{"weak", Filter{State: Weak}, []Info{w}},
		{"lingering", Filter{State: Lingering}, nil},
		{"one label", Filter{Labels: map[string]string{"team": "a"}}, []Info{pa, pab, w}},
		{"two labels", Filter{Labels: map[string]string{"team": "a", "env": "prod"}}, []Info{pa, w}},
		{"label value mismatch", Filter{Labels: map[string]string{"team": "c"}}, nil},
		{"label key absent", Filter{Labels: map[string]string{"owner": ""}}, nil},
		{"lease a", Filter{Lease: &a.ID}, []Info{pa, pab}},
		{"lease b", Filter{Lease: &b.ID}, []Info{pab, pb}},
		{"lease pinning nothing", Filter{Lease: &strangerID}, nil},
		{"lease and label", Filter{Lease: &b.ID, Labels: map[string]string{"team": "a"}}, []Info{pab}},
		{"state and label", Filter{State: Weak, Labels: map[string]string{"env": "prod"}}, []Info{w}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			infos, next, err := r.List(tt.filter, "", 100)
			if err != nil || next != "" {
				t.Fatalf("List = next %q, %v", next, err)
			}
			got := idsOf(infos)
			want := idsOf(tt.want)
			cmp := func(x, y handle.ID) int { return bytes.Compare(x[:], y[:]) }
			slices.SortFunc(want, cmp)
			if !slices.Equal(got, want) {
				t.Fatalf("List(%s) = %x, want %x", tt.name, got, want)
			}
		})
	}

	// A collected object is not listed, even before it is reaped.
	r.Collect()
	infos, _, err := r.List(Filter{State: Weak}, "", 100)
	if err != nil || len(infos) != 0 {
		t.Fatalf("List of weak objects after Collect = %d objects, %v; want none", len(infos), err)
	}
}

func TestListRejectsBadPageToken(t *testing.T) {
	r := newRegistry(t, Config{})
	tests := []string{
		"!!!",
		"not base64 at all",
		base64.RawURLEncoding.EncodeToString(make([]byte, 15)),
		base64.RawURLEncoding.EncodeToString(make([]byte, 17)),
		base64.StdEncoding.EncodeToString(make([]byte, 16)), // padded
	}
	for _, tok := range tests {
		if infos, next, err := r.List(Filter{}, tok, 10); !errors.Is(err, ErrPageToken) || infos != nil || next != "" {
			t.Errorf("List(token %q) = %d, %q, %v; want ErrPageToken", tok, len(infos), next, err)
		}
	}
}

func TestInspectReturnsPinsOldestFirst(t *testing.T) {
	clock := newFakeClock()
	r := newRegistry(t, Config{Now: clock.Now})
	a, b, c := newHolder(r), newHolder(r), newHolder(r)
	t0 := clock.Now()
	info, _ := put(t, r, 8, 1, Meta{}, &a)
	clock.Advance(time.Second)
	mustPin(t, r, info.ID, b)
	clock.Advance(time.Second)
	mustPin(t, r, info.ID, c)
	clock.Advance(time.Second)
	mustUnpin(t, r, info.ID, b)
	clock.Advance(time.Second)
	mustPin(t, r, info.ID, b) // b is now the newest

	got, pins, err := r.Inspect(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != Pinned || got.Pins != 3 {
		t.Fatalf("Inspect info = %v with %d pins; want PINNED with 3", got.State, got.Pins)
	}
	want := []Pin{
		{Lease: a.ID, LeaseID: a.LeaseID, Since: t0},
		{Lease: c.ID, LeaseID: c.LeaseID, Since: t0.Add(2 * time.Second)},
		{Lease: b.ID, LeaseID: b.LeaseID, Since: t0.Add(4 * time.Second)},
	}
	if len(pins) != len(want) {
		t.Fatalf("Inspect returned %d pins, want %d", len(pins), len(want))
	}
	for i := range want {
		if pins[i].Lease != want[i].Lease || pins[i].LeaseID != want[i].LeaseID || !pins[i].Since.Equal(want[i].Since) {
			t.Fatalf("pin %d = %+v, want %+v", i, pins[i], want[i])
		}
	}
	// The caller gets a copy: changing it changes nothing inside.
	pins[0] = Pin{}
	if _, again, _ := r.Inspect(info.ID); again[0].Lease != a.ID {
		t.Fatal("Inspect handed out the registry's own pin slice")
	}
}

// TestFilteredListPagesAreBounded: a filter that few objects match does
// not scan the whole registry for a page: each page examines a bounded
// number of entries and may come back short, or empty, with a token to go
// on; paging on finds every match once, in ID order.
func TestFilteredListPagesAreBounded(t *testing.T) {
	noAutoGC(t) // the weak objects stay
	r := newRegistry(t, Config{})
	by := newHolder(r)
	const n, limit = 5000, 10
	for i := range n {
		put(t, r, 8, byte(i), Meta{}, nil)
	}
	var want []handle.ID
	for i := range 3 {
		info, _ := put(t, r, 8, byte(i), Meta{}, &by)
		want = append(want, info.ID)
	}
	slices.SortFunc(want, func(x, y handle.ID) int { return bytes.Compare(x[:], y[:]) })
	var got []handle.ID
	token, pages := "", 0
	for ; pages <= n; pages++ {
		infos, next, err := r.List(Filter{State: Pinned}, token, limit)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, idsOf(infos)...)
		if next == "" {
			break
		}
		token = next
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paging through the pinned objects found %x, want %x", got, want)
	}
	if least := n / (listScanFactor * limit); pages < least {
		t.Fatalf("%d pages for %d objects: a page examined more than %d entries", pages+1, n, listScanFactor*limit)
	}
}

// TestListRefusesPageTokensOfOtherKeysNodesAndRuns: a page token is bound
// to the key, node and run that made it; one from elsewhere, or altered,
// or a handle of another kind, is refused rather than read as a place.
func TestListRefusesPageTokensOfOtherKeysNodesAndRuns(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	var infos []Info
	for i := range 3 {
		info, _ := put(t, r, 8, byte(i), Meta{}, &by)
		infos = append(infos, info)
	}
	_, token, err := r.List(Filter{}, "", 1)
	if err != nil || token == "" {
		t.Fatalf("first page: token %q, %v", token, err)
	}
	if page, _, err := r.List(Filter{}, token, 10); err != nil || len(page) != 2 {
		t.Fatalf("second page with this run's token: %d objects, %v; want 2", len(page), err)
	}
	last, err := r.codec.Parse(handle.PageToken, token)
	if err != nil {
		t.Fatal(err)
	}
	codec := func(key []byte, node uint16, epoch uint64) *handle.Codec {
		c, err := handle.NewCodec(handle.Config{Key: key, Node: node, Epoch: epoch})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	otherKey := bytes.Repeat([]byte{0x24}, handle.MinKeyLen)
	altered := []byte(token)
	altered[len(altered)-5] ^= 1
	tests := []struct {
		name  string
		token string
	}{
		{"another key", codec(otherKey, testNode, testEpoch).Format(handle.PageToken, last)},
		{"another node", codec(testKey, testNode+1, testEpoch).Format(handle.PageToken, last)},
		{"another run", codec(testKey, testNode, testEpoch+1).Format(handle.PageToken, last)},
		{"altered", string(altered)},
		{"the bare ID", base64.RawURLEncoding.EncodeToString(last[:])},
		{"an object handle", infos[0].Handle},
		{"an object handle under the token prefix", handle.PageToken.Prefix() + infos[0].Handle[len(handle.Object.Prefix()):]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if page, next, err := r.List(Filter{}, tt.token, 10); !errors.Is(err, ErrPageToken) || page != nil || next != "" {
				t.Fatalf("List(%q) = %d objects, next %q, %v; want ErrPageToken", tt.token, len(page), next, err)
			}
		})
	}
}
