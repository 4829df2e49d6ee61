package main

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// stallGuard bounds a transfer by --timeout without progress rather than
// in total: a large put or get may take minutes, but one that moves no
// byte for --timeout has stalled (a server that accepts and never
// answers, a dead network) and is cut with DEADLINE_EXCEEDED.
type stallGuard struct {
	last   atomic.Int64 // unix nanoseconds of the last progress
	cancel context.CancelCauseFunc
	done   chan struct{}
}

var errStalled = status.Error(codes.DeadlineExceeded, "no progress")

func (a *app) stallGuard(ctx context.Context) (context.Context, *stallGuard) {
	ctx, cancel := context.WithCancelCause(ctx)
	g := &stallGuard{cancel: cancel, done: make(chan struct{})}
	g.touch()
	go func() {
		tick := time.NewTicker(min(a.timeout/4, time.Second))
		defer tick.Stop()
		for {
			select {
			case <-g.done:
				return
			case <-tick.C:
				if time.Since(time.Unix(0, g.last.Load())) > a.timeout {
					cancel(errStalled)
					return
				}
			}
		}
	}()
	return ctx, g
}

func (g *stallGuard) touch() { g.last.Store(time.Now().UnixNano()) }

// explain says DEADLINE_EXCEEDED, not "canceled", when the guard cut the
// transfer that returned err.
func (g *stallGuard) explain(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errStalled) {
		return errStalled
	}
	return err
}

// stop ends the watch; call it once the transfer is over.
func (g *stallGuard) stop() {
	close(g.done)
	g.cancel(nil)
}

// reader and writer count each read or write as progress.
func (g *stallGuard) reader(r io.Reader) io.Reader { return progressReader{r, g} }
func (g *stallGuard) writer(w io.Writer) io.Writer { return progressWriter{w, g} }

type progressReader struct {
	r io.Reader
	g *stallGuard
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.g.touch()
	return n, err
}

type progressWriter struct {
	w io.Writer
	g *stallGuard
}

func (p progressWriter) Write(b []byte) (int, error) {
	p.g.touch()
	return p.w.Write(b)
}
