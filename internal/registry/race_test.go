//go:build race

package registry

// raceEnabled: the race detector slows every memory access; load tests
// scale down.
const raceEnabled = true
