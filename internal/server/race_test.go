//go:build race

package server

// raceEnabled: the race detector makes allocations of its own, so counts
// of allocations mean nothing under it.
const raceEnabled = true
