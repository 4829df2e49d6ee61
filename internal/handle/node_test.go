package handle_test

import (
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
