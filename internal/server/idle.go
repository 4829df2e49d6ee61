package server

import (
	"context"
	"time"
)

// idleBounded returns a receive that fails with a *StreamStalledError
// once a message has not come for idle (DefaultStreamStallTimeout when 0
// or less): a client that begins an upload and stops sending would
// otherwise hold its handler, and the bytes it reserved, for as long as
// its connection lives. The stream's own Recv cannot be interrupted, so
// one goroutine receives, a message ahead at most; stop, which the handler
// defers, lets it go, and it ends once its Recv returns (gRPC's does when
// the handler has returned).
func idleBounded[T any](ctx context.Context, recv func() (T, error), idle time.Duration) (bounded func() (T, error), stop func()) {
	if idle <= 0 {
		idle = DefaultStreamStallTimeout
	}
	type result struct {
		m   T
		err error
	}
	results := make(chan result)
	stopped := make(chan struct{})
	go func() {
		for {
			m, err := recv()
			select {
			case results <- result{m, err}:
			case <-ctx.Done():
				return
			case <-stopped:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(idle)
	stop = func() { timer.Stop(); close(stopped) }
	return func() (T, error) {
		timer.Reset(idle)
		select {
		case r := <-results:
			return r.m, r.err
		case <-timer.C:
			var zero T
			return zero, &StreamStalledError{Stall: idle, Sending: true}
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}, stop
}
