package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

func TestShortDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{42 * time.Second, "42s"},
		{90 * time.Second, "1m30s"},
		{5 * time.Minute, "5m"},
		{45*time.Minute + 10*time.Second, "45m"},
		{90 * time.Minute, "1h30m"},
		{3 * time.Hour, "3h"},
		{15*time.Hour + 5*time.Minute, "15h"},
		{50 * time.Hour, "2d"},
	}
	for _, tt := range tests {
		if got := shortDuration(tt.d); got != tt.want {
			t.Errorf("shortDuration(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestTableCells(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, got, want string
	}{
		{"size", size(1536), "1.5 KiB"},
		{"no size", size(-1), "-"},
		{"age", age(timestamppb.New(now.Add(-3*time.Minute)), now), "3m"},
		{"no age", age(nil, now), "-"},
		{"stamp", stamp(timestamppb.New(now.Add(1500 * time.Microsecond))), "2026-11-26T12:00:00.001Z"},
		{"state", stateName(registryv1.ObjectState_OBJECT_STATE_PINNED), "pinned"},
		{"kind", kindName(registryv1.EventKind_EVENT_KIND_COLLECTED), "COLLECTED"},
		{"labels sorted", labelString(map[string]string{"z": "1", "a": "2"}), "a=2,z=1"},
		{"no labels", labelString(nil), "-"},
		{"bytes limit", limitValue(16<<20, "bytes"), "16 MiB"},
		{"seconds limit", limitValue(300, "seconds"), "5m"},
		{"count limit", limitValue(10000, ""), "10000"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

// TestEncodeIsStableAndComplete checks what scripts rely on: the same
// message gives the same bytes every time, zero fields are present, and
// the document reads back as the message it came from.
func TestEncodeIsStableAndComplete(t *testing.T) {
	msg := &registryv1.ObjectInfo{Handle: "obj_x", Size: 5, Labels: map[string]string{"b": "2", "a": "1"}}
	for _, format := range []string{"json", "yaml"} {
		for _, compact := range []bool{false, true} {
			var first bytes.Buffer
			if err := encode(&first, msg, format, compact); err != nil {
				t.Fatal(err)
			}
			for range 20 { // protojson varies its spacing at random
				var again bytes.Buffer
				if err := encode(&again, msg, format, compact); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(first.Bytes(), again.Bytes()) {
					t.Fatalf("%s compact=%v: output varies:\n%s\n%s", format, compact, first.Bytes(), again.Bytes())
				}
			}
			doc := first.Bytes()
			if format == "yaml" {
				doc = bytes.TrimPrefix(doc, []byte("---\n"))
				var err error
				if doc, err = yaml.YAMLToJSON(doc); err != nil {
					t.Fatal(err)
				}
			} else if compact && bytes.Count(doc, []byte("\n")) != 1 {
				t.Errorf("compact json is not one line: %q", doc)
			}
			var fields map[string]any
			if err := json.Unmarshal(doc, &fields); err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			if _, ok := fields["pinCount"]; !ok {
				t.Errorf("%s: zero field pinCount missing: %s", format, doc)
			}
			back := &registryv1.ObjectInfo{}
			if err := protojson.Unmarshal(doc, back); err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			if back.GetHandle() != "obj_x" || back.GetSize() != 5 || back.GetLabels()["a"] != "1" {
				t.Errorf("%s: read back %v", format, back)
			}
		}
	}
}
