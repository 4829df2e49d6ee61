package robust

import "testing"

// TestFlatAfterWarmUpCatchesGrowth: the soak's trend check passes a
// series that swings with the load and fails one that keeps growing.
func TestFlatAfterWarmUpCatchesGrowth(t *testing.T) {
	const mib = 1 << 20
	series := func(heaps []uint64, gs []int) []figures {
		out := make([]figures, len(heaps))
		for i := range heaps {
			out[i] = figures{heap: heaps[i] * mib, goroutines: gs[i]}
		}
		return out
	}
	for _, tt := range []struct {
		name    string
		samples []figures
		bad     int
	}{
		{"swings with the load", series([]uint64{4, 7, 5, 6, 4, 7, 5, 6, 5}, []int{45, 52, 22, 48, 50, 47, 51, 46, 49}), 0},
		{"too short to tell", series([]uint64{4, 400}, []int{40, 4000}), 0},
		{"heap keeps growing", series([]uint64{4, 5, 6, 12, 20, 28, 36, 44, 52}, []int{45, 45, 45, 45, 45, 45, 45, 45, 45}), 3},
		{"goroutines keep growing", series([]uint64{4, 4, 4, 4, 4, 4}, []int{40, 45, 60, 80, 90, 120}), 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vs := flatAfterWarmUp(tt.samples)
			if len(vs) != tt.bad {
				t.Errorf("%d violations %v, want %d", len(vs), vs, tt.bad)
			}
		})
	}
}
