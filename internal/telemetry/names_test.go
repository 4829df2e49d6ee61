package telemetry

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestHandleAttrIsBounded(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"a real handle is kept", "obj_" + strings.Repeat("A", 52), "obj_" + strings.Repeat("A", 52)},
		{"garbage is cut", strings.Repeat("x", 1<<20), strings.Repeat("x", maxHandleAttr)},
		{"on a rune boundary", strings.Repeat("x", maxHandleAttr-1) + "é", strings.Repeat("x", maxHandleAttr-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := HandleAttr(tt.in).Value.AsString()
			if got != tt.want || !utf8.ValidString(got) {
				t.Fatalf("HandleAttr kept %d bytes %q, want %d", len(got), got[:min(len(got), 80)], len(tt.want))
			}
		})
	}
}
