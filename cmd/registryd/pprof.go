package main

import (
	"net/http"
	"net/http/pprof"
	"runtime"
)

// withPprof serves Go's profiles under /debug/pprof/ beside h, for
// `go tool pprof http://ADDR/debug/pprof/profile` against a running
// registryd. Only --pprof turns it on, and only on a loopback
// --metrics-addr (config refuses others): a profile or a goroutine dump
// shows the process's internals to whoever can fetch it, and the
// metrics listener has no authentication. Reach it from elsewhere
// through a tunnel (ssh -L, kubectl port-forward).
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index) // heap, goroutine, mutex, block, allocs, threadcreate
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}

// enableContentionProfiles makes the mutex and block profiles record
// something: off by default, as the runtime has them, because sampling
// costs a little on every contended lock and blocking call. One contended
// lock in 100 is sampled, and a blocking event of 10µs or more on average.
func enableContentionProfiles() {
	runtime.SetMutexProfileFraction(100)
	runtime.SetBlockProfileRate(10_000) // nanoseconds
}
