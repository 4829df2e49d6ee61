package client

import (
	"math/rand/v2"
	"time"
)

// backoffConfig paces the attempts to re-establish a broken stream.
type backoffConfig struct {
	initial, max time.Duration
	multiplier   float64
	jitter       float64 // ± this fraction of each delay
}

var defaultBackoff = backoffConfig{initial: 50 * time.Millisecond, max: 2 * time.Second, multiplier: 1.6, jitter: 0.2}

// backoff is the jittered exponential backoff of one lease's or watch's
// reconnections. Its delay grows across resumes, not only across the
// attempts of one: a stream that is resumed and then breaks again at once
// (a server that ends it after every resume, a request that fails for good
// each time it is sent) must not start again from no delay each time.
//
// It starts again from no delay only once a stream has stayed up at least
// the longest delay: a stream healthy that long broke for a new reason.
// A successful answer on the stream is no such proof (the server may
// answer and then end the stream every time), so it does not reset it.
//
// It is used by one goroutine at a time.
type backoff struct {
	cfg     backoffConfig
	delay   time.Duration // before jitter, for the next wait; 0: the next attempt goes at once
	upSince time.Time     // when the last stream was established
}

func newBackoff(cfg backoffConfig) *backoff { return &backoff{cfg: cfg} }

// up records that a stream was established.
func (b *backoff) up() { b.upSince = time.Now() }

// down records that the stream broke, and starts again from no delay if it
// had been up long enough to count as healthy.
func (b *backoff) down() {
	if !b.upSince.IsZero() && time.Since(b.upSince) >= b.cfg.max {
		b.delay = 0
	}
}

// next returns how long to wait before the next attempt, and grows the
// delay for the one after.
func (b *backoff) next() time.Duration {
	d := b.delay
	if d == 0 {
		b.delay = b.cfg.initial
		return 0
	}
	b.delay = min(time.Duration(float64(d)*b.cfg.multiplier), b.cfg.max)
	return time.Duration(float64(d) * (1 + b.cfg.jitter*(2*rand.Float64()-1))) //nolint:gosec // jitter spreads retries; it needs no unpredictability
}

// wait waits d, and reports false if done is closed first.
func wait(d time.Duration, done <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
