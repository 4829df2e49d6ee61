package server

import (
	"context"
	"errors"
	"time"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/registry"
)

// sendEvents runs a watch handler's pump with a send that goes through an
// outbox, so that a watcher that stops reading cannot tie its handler up:
// gRPC's Send would block for ever, deaf to the registry dropping the
// watcher (WATCH_TOO_SLOW) or closing. A send that waits longer than
// stall ends the stream with STREAM_STALLED; one that waits for room while
// the subscription ends returns at once, with what ended it.
func sendEvents[T any](ctx context.Context, streamSend func(T) error, stall time.Duration, sub *registry.Subscription,
	run func(send func(T) error) error) error {
	out := newOutbox(streamSend, stall)
	defer out.abandon()
	err := run(func(m T) error { return out.send(ctx, m, sub.Done()) })
	switch {
	case errors.Is(err, errEndedOutside): // ended while the watcher was behind
		if err := sub.Err(); err != nil {
			return toStatus(err, handle.Object)
		}
		return nil
	case err != nil:
		return streamErr(ctx, err)
	}
	select {
	case <-sub.Done(): // dropped or closed: do not wait long on a watcher
		return out.flushWithin(ctx, min(out.stall, endedFlush))
	default:
		return out.flush(ctx) // the last events are owed
	}
}
