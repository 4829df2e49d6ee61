package cluster_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/weakref/registry/internal/cluster"
)

func TestNameOfTarget(t *testing.T) {
	for _, tc := range []struct {
		target, name string
		ok           bool
	}{
		{"etcd:///registry/prod", "prod", true},
		{"etcd://ignored/registry/a.b_c-1", "a.b_c-1", true},
		{cluster.Target("x"), "x", true},
		{"dns:///registry/prod", "", false},
		{"etcd:///prod", "", false},
		{"etcd:///registry/", "", false},
		{"etcd:///registry/a/b", "", false},
		{"etcd:///registry/..", "", false},
		{"127.0.0.1:7000", "", false},
	} {
		name, err := cluster.NameOfTarget(tc.target)
		if (err == nil) != tc.ok || name != tc.name {
			t.Errorf("NameOfTarget(%q) = %q, %v; want %q, ok=%v", tc.target, name, err, tc.name, tc.ok)
		}
	}
}

func TestKeysCarryTheirTag(t *testing.T) {
	for _, key := range []string{cluster.NodeKey("c", 65535), cluster.TagKey("c", 65535)} {
		tag, err := cluster.TagOfKey(key)
		if err != nil || tag != 65535 {
			t.Errorf("TagOfKey(%q) = %d, %v; want 65535", key, tag, err)
		}
	}
	if got, want := cluster.NodeKey("c", 3), "registry/c/nodes/3"; got != want {
		t.Errorf("NodeKey = %q, want %q", got, want)
	}
	if _, err := cluster.TagOfKey("registry/c/nodes/x"); err == nil {
		t.Error("TagOfKey of a key without a tag: no error")
	}
}

func TestMemberSurvivesTheEndpointsEncoding(t *testing.T) {
	m := cluster.Member{Node: 7, Epoch: 1 << 40, Version: "v1", Started: time.Date(2026, 12, 2, 3, 4, 5, 0, time.UTC), KeyID: cluster.KeyID([]byte("k"))}
	// The endpoints package stores Endpoint as JSON and decodes the
	// metadata into a map[string]any.
	b, err := json.Marshal(m.Endpoint("127.0.0.1:7000"))
	if err != nil {
		t.Fatal(err)
	}
	var ep endpoints.Endpoint
	if err := json.Unmarshal(b, &ep); err != nil {
		t.Fatal(err)
	}
	got, err := cluster.MemberOf(ep)
	if err != nil || !got.Started.Equal(m.Started) || got.Node != m.Node || got.Epoch != m.Epoch || got.Version != m.Version || got.KeyID != m.KeyID {
		t.Fatalf("MemberOf = %+v, %v; want %+v", got, err, m)
	}
}

func TestKeyIDTellsKeysApartAndHidesThem(t *testing.T) {
	a, b := []byte("0123456789abcdef0123456789abcdef"), []byte("0123456789abcdef0123456789abcdeF")
	if cluster.KeyID(a) != cluster.KeyID(bytes.Clone(a)) {
		t.Error("one key, two fingerprints")
	}
	if cluster.KeyID(a) == cluster.KeyID(b) {
		t.Error("two keys, one fingerprint")
	}
	if id := cluster.KeyID(a); len(id) != 16 || strings.Contains(id, hex.EncodeToString(a[:4])) {
		t.Errorf("KeyID = %q, want 16 hex digits that do not show the key", id)
	}
}

// FuzzNameOfTarget: whatever a target string holds, NameOfTarget either
// refuses it or returns a valid name whose Target reads back to it.
func FuzzNameOfTarget(f *testing.F) {
	for _, s := range []string{"etcd:///registry/prod", "etcd://a/registry/x", "etcd:///registry/", "etcd:///registry/a/b", "dns:///x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		name, err := cluster.NameOfTarget(target)
		if err != nil {
			return
		}
		if err := cluster.CheckName(name); err != nil {
			t.Fatalf("NameOfTarget(%q) = %q, which CheckName refuses: %v", target, name, err)
		}
		if back, err := cluster.NameOfTarget(cluster.Target(name)); err != nil || back != name {
			t.Fatalf("Target(%q) reads back as %q, %v", name, back, err)
		}
	})
}
