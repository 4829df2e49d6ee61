package handle_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/weakref/registry/internal/handle"
)

func TestNodeOfReadsTheIssuersTag(t *testing.T) {
	for _, node := range []uint16{0, 1, 255, 256, 65535} {
		c := newCodec(t, handle.Config{Node: node, Epoch: 99})
		for _, k := range []handle.Kind{handle.Object, handle.Lease} {
			_, s := c.New(k)
			got, ok := handle.NodeOf(k, s)
			if !ok || got != node {
				t.Errorf("NodeOf(%v, handle of node %d) = %d, %v", k, node, got, ok)
			}
		}
	}
}

func TestNodeOfRefusesWhatIsNotShapedLikeAHandle(t *testing.T) {
	c := newCodec(t, handle.Config{Node: 3, Epoch: 99})
	_, obj := c.New(handle.Object)
	for name, s := range map[string]string{
		"empty":         "",
		"lease as obj":  strings.Replace(obj, "obj_", "lse_", 1),
		"short":         obj[:len(obj)-1],
		"not base64":    "obj_" + "!" + obj[5:],
		"other version": "obj_" + "B" + obj[5:],
	} {
		if node, ok := handle.NodeOf(handle.Object, s); ok {
			t.Errorf("%s: NodeOf(%q) = %d, true; want false", name, s, node)
		}
	}
}

// FuzzNodeOfAgreesWithParse: for any string, NodeOf's tag is the one
// Parse reports, whenever Parse finds a genuine handle of some node.
func FuzzNodeOfAgreesWithParse(f *testing.F) {
	ours := newCodec(f, handle.Config{Node: 7, Epoch: 12345})
	theirs := newCodec(f, handle.Config{Node: 9, Epoch: 12345})
	for _, c := range []*handle.Codec{ours, theirs} {
		_, s := c.New(handle.Object)
		f.Add(s)
	}
	f.Add("obj_")
	f.Fuzz(func(t *testing.T, s string) {
		node, shaped := handle.NodeOf(handle.Object, s)
		_, err := ours.Parse(handle.Object, s)
		var foreign *handle.ForeignNodeError
		switch {
		case err == nil:
			if !shaped || node != 7 {
				t.Fatalf("Parse took %q as ours, NodeOf says %d, %v", s, node, shaped)
			}
		case errors.As(err, &foreign):
			if !shaped || node != foreign.Node {
				t.Fatalf("Parse says %q is node %d's, NodeOf says %d, %v", s, foreign.Node, node, shaped)
			}
		}
	})
}
