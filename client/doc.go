// Package client is the Go client of registry: it stores objects in a
// registryd, resolves their handles, and keeps them alive with leases.
//
// An object lives while a lease pins it. Unpinned, registryd holds it
// only weakly and the Go garbage collector takes it at its next cycle;
// its handle then resolves to an error matching ErrCollected. So: put
// what you share under a lease, and close the lease when you are done.
//
//	c, err := client.Dial("127.0.0.1:7600")
//	lease, err := c.Lease(ctx, client.Grace(30*time.Second))
//	info, err := c.Put(ctx, data, client.PinnedBy(lease))
//	// ... hand info.Handle to another process; it pins it under its own lease ...
//	lease.Close(ctx)
//
// A lease is one gRPC stream. If the connection drops, the lease
// reconnects and resumes within its grace, keeping every pin; when it
// cannot, Done is closed and Err says why (ErrLeaseLost, ErrLeaseRevoked,
// ErrRestarted).
//
// Errors from registryd are *Error values; branch on them with errors.Is
// against the sentinels (ErrCollected, ErrUnknownHandle, ...), or read
// their Reason, the server's ErrorInfo reason.
//
// The client traces its calls with OpenTelemetry's global tracer
// provider and propagator (see WithTracerProvider), so an application that
// sets up OpenTelemetry sees each call continue in registryd's spans.
package client
