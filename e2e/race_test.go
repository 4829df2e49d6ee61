//go:build race

package e2e

// raceEnabled: this test binary runs under the race detector, which
// slows registryd several times over and unevenly.
const raceEnabled = true
