package client

import (
	"testing"
	"time"
)

// TestBackoffGrowsAcrossResumes: a stream that is resumed and breaks
// again at once keeps growing the delay, up to the maximum; one that stayed
// up at least the maximum starts again from no delay.
func TestBackoffGrowsAcrossResumes(t *testing.T) {
	cfg := backoffConfig{initial: 10 * time.Millisecond, max: time.Hour, multiplier: 2, jitter: 0}
	b := newBackoff(cfg)
	b.up()
	var waits []time.Duration
	for range 5 { // each resume succeeds at its first attempt, then the stream breaks at once
		b.down()
		waits = append(waits, b.next())
		b.up()
	}
	want := []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}

	b.upSince = time.Now().Add(-cfg.max) // up for as long as the longest delay
	b.down()
	if d := b.next(); d != 0 {
		t.Fatalf("after a healthy stream: wait %v, want 0", d)
	}
	if d := b.next(); d != cfg.initial {
		t.Fatalf("second attempt after a healthy stream: wait %v, want %v", d, cfg.initial)
	}
}

// TestBackoffIsCappedAndJittered: waits stay within the jitter of the
// delay, and the delay stops at the maximum.
func TestBackoffIsCappedAndJittered(t *testing.T) {
	cfg := backoffConfig{initial: 10 * time.Millisecond, max: 100 * time.Millisecond, multiplier: 3, jitter: 0.2}
	b := newBackoff(cfg)
	b.next()
	for range 20 {
		d := b.next()
		if d < 8*time.Millisecond || d > 120*time.Millisecond {
			t.Fatalf("wait %v outside [8ms, 120ms]", d)
		}
	}
	if b.delay != cfg.max {
		t.Fatalf("delay %v, want the maximum %v", b.delay, cfg.max)
	}
}
