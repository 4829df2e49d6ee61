package server

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"golang.org/x/time/rate"

	"github.com/weakref/registry/internal/auth"
)

// RateLimitedError reports that an identity sent requests faster than
// --identity-rate allows, past its --identity-burst.
type RateLimitedError struct {
	Identity string
	Rate     rate.Limit    // requests per second
	Burst    int           // requests at once
	Delay    time.Duration // when one more request would be allowed
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("identity %q sends more than %s requests/s (burst %d)", e.Identity, formatRate(e.Rate), e.Burst)
}

func formatRate(r rate.Limit) string { return strconv.FormatFloat(float64(r), 'g', -1, 64) }

// rateLimiter keeps one token bucket (golang.org/x/time/rate) per
// identity. What counts as a request: every unary call, every stream's
// start, and every message a Lease stream receives after its open: pins
// and unpins are cheap to send and each one costs the server a pass over
// its handles, so a lease stream is the flood vector a per-call count
// would miss. Watch and Upload messages are not counted: a watch sends
// one request, and an upload's chunks are bounded by its byte budgets.
//
// It is a ratelimit.Limiter, as go-grpc-middleware's interceptors take;
// registryd calls it from its own (limitInterceptors) because those
// flatten the refusal into a message, and a refusal here carries an
// ErrorInfo, a RetryInfo and a QuotaFailure. The anonymous identity (auth
// off) is never limited. A nil rateLimiter limits nothing.
type rateLimiter struct {
	rate  rate.Limit
	burst int
	now   func() time.Time // time.Now; tests may stop the clock

	mu sync.Mutex
	// buckets holds a limiter per identity that sent a request lately.
	// A bucket that has refilled to its burst is as good as a new one, so
	// a sweep deletes those when the map has doubled since the last one:
	// the map holds the identities active within about burst/rate
	// seconds, not every identity ever seen, at a cost per call that averages O(1).
	buckets   map[string]*rate.Limiter
	sweepSize int
}

var _ ratelimit.Limiter = (*rateLimiter)(nil)

// minSweep is the map size below which no sweep runs.
const minSweep = 64

func newRateLimiter(r float64, burst int) *rateLimiter {
	if r <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	return &rateLimiter{rate: rate.Limit(r), burst: burst, now: time.Now, buckets: make(map[string]*rate.Limiter), sweepSize: minSweep}
}

// Limit takes one request from the bucket of ctx's identity, or fails with
// a *RateLimitedError saying when the next one would pass. A refused
// request takes no token.
func (l *rateLimiter) Limit(ctx context.Context) error {
	name := auth.FromContext(ctx).Name
	if l == nil || name == auth.AnonymousName {
		return nil
	}
	now := l.now()
	b := l.bucket(name, now)
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return &RateLimitedError{Identity: name, Rate: l.rate, Burst: l.burst, Delay: d}
	}
	return nil
}

func (l *rateLimiter) bucket(name string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.buckets[name]; ok {
		return b
	}
	if len(l.buckets) >= l.sweepSize {
		for n, b := range l.buckets {
			if b.TokensAt(now) >= float64(l.burst) {
				delete(l.buckets, n)
			}
		}
		l.sweepSize = max(minSweep, 2*len(l.buckets))
	}
	b := rate.NewLimiter(l.rate, l.burst)
	l.buckets[name] = b
	return b
}

// size returns how many identities have a bucket now.
func (l *rateLimiter) size() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
