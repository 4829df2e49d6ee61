package registry

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/weakref/registry/internal/handle"
)

func TestSortIDsOrdersAsTheIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []handle.ID {
		ids := make([]handle.ID, n)
		for i := range ids {
			for j := range ids[i] {
				ids[i][j] = byte(rng.Uint32())
			}
		}
		return ids
	}
	// Ties in the first four bytes, which the radix passes leave to the
	// insertion pass.
	ties := random(500)
	for i := range ties {
		ties[i][0], ties[i][1], ties[i][2], ties[i][3] = 7, 7, byte(i%3), 7
	}
	reversed := random(300)
	slices.SortFunc(reversed, compareIDs)
	slices.Reverse(reversed)
	for _, tc := range []struct {
		name string
		ids  []handle.ID
	}{
		{"empty", nil},
		{"fewer than the radix threshold", random(10)},
		{"random", random(5000)},
		{"ties in the radix bytes", ties},
		{"reversed", reversed},
		{"duplicates", slices.Concat(ties[:80], ties[:80])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := slices.Clone(tc.ids)
			slices.SortFunc(want, compareIDs)
			got := slices.Clone(tc.ids)
			sortIDs(got, make([]handle.ID, len(got)))
			if !slices.Equal(got, want) {
				t.Fatalf("sortIDs of %d IDs is not in index order", len(got))
			}
		})
	}
}
