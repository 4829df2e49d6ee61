package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weakref/registry/client"
)

// A producer shares an object and keeps it alive exactly as long as it
// holds its lease.
func Example() {
	ctx := context.Background()
	c, err := client.Dial(exampleAddr) // e.g. "127.0.0.1:7600"
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	lease, err := c.Lease(ctx, client.LeaseName("example"), client.Grace(30*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	info, err := c.Put(ctx, []byte("hello, weak world"), client.ContentType("text/plain"), client.PinnedBy(lease))
	if err != nil {
		log.Fatal(err)
	}
	data, _, err := c.Resolve(ctx, info.Handle)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (%s, %d pin)\n", data, info.State, info.PinCount)

	released, err := lease.Close(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("released", released)
	// Output:
	// hello, weak world (pinned, 1 pin)
	// released 1
}

// A consumer pins a handle it was given, and learns whether the object
// still exists from the pin's result.
func ExampleLease_Pin() {
	ctx := context.Background()
	c, err := client.Dial(exampleAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	lease, err := c.Lease(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Close(ctx)

	info, err := c.Put(ctx, []byte("shared"), client.PinnedBy(lease))
	if err != nil {
		log.Fatal(err)
	}
	results, err := lease.Pin(ctx, info.Handle, "obj_not-a-handle")
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range results {
		switch {
		case r.Err == nil:
			fmt.Println(r.Outcome)
		case errors.Is(r.Err, client.ErrCollected):
			fmt.Println("gone: collected")
		case errors.Is(r.Err, client.ErrMalformedHandle):
			fmt.Println("not a handle")
		}
	}
	// Output:
	// already pinned
	// not a handle
}

// Resolving the handle of an object nobody pinned, after a collection,
// gives an error to branch on.
func ExampleClient_Resolve_collected() {
	ctx := context.Background()
	c, err := client.Dial(exampleAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Put without a lease: the object is weak at once.
	info, err := c.Put(ctx, []byte("ephemeral"))
	if err != nil {
		log.Fatal(err)
	}
	forceCollection() // registryctl gc, or the Go runtime on its own

	_, _, err = c.Resolve(ctx, info.Handle)
	var e *client.Error
	if errors.Is(err, client.ErrCollected) && errors.As(err, &e) {
		fmt.Println(e.Reason)
	}
	// Output: OBJECT_COLLECTED
}

// Watching an object prints its lifecycle until it is collected.
func ExampleClient_Watch() {
	ctx := context.Background()
	c, err := client.Dial(exampleAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	lease, err := c.Lease(ctx)
	if err != nil {
		log.Fatal(err)
	}
	info, err := c.Put(ctx, []byte("watched"), client.PinnedBy(lease))
	if err != nil {
		log.Fatal(err)
	}
	w, err := c.Watch(ctx, info.Handle)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	lease.Close(ctx)
	forceCollection()
	for {
		ev, err := w.Recv()
		if err != nil {
			break // io.EOF: the object has ended
		}
		fmt.Println(ev.Kind, ev.State)
	}
	// Output:
	// CURRENT pinned
	// UNPINNED weak
	// WEAK weak
	// COLLECTED collected
}

// A reader fetches many objects in one round trip; each handle is
// answered on its own.
func ExampleClient_ResolveMany() {
	ctx := context.Background()
	c, err := client.Dial(exampleAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	lease, err := c.Lease(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Close(ctx)
	var handles []string
	for _, s := range []string{"alpha", "beta"} {
		info, err := c.Put(ctx, []byte(s), client.PinnedBy(lease))
		if err != nil {
			log.Fatal(err)
		}
		handles = append(handles, info.Handle)
	}
	handles = append(handles, "obj_not-a-handle")

	results, err := c.ResolveMany(ctx, handles)
	if err != nil {
		log.Fatal(err) // the call as a whole: registryd unreachable, ...
	}
	for _, r := range results {
		if r.Err != nil {
			fmt.Println("error:", errors.Is(r.Err, client.ErrMalformedHandle))
			continue
		}
		fmt.Printf("%s\n", r.Data)
	}
	// Output:
	// alpha
	// beta
	// error: true
}

// A client of a cluster routes each handle to the node that issued it,
// and a lease pins on every node it needs; the nodes' losses are reported
// to OnLostPins. (It needs etcd and registryd nodes, so it is not run.)
func ExampleDial_cluster() {
	ctx := context.Background()
	c, err := client.Dial("etcd:///registry/prod", client.WithEtcd(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}}))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	lease, err := c.Lease(ctx, client.Grace(30*time.Second), client.OnLostPins(func(lp client.LostPins) {
		log.Printf("node %d: %d pins lost: %v", lp.Node, len(lp.Handles), lp.Err)
	}))
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Close(ctx)
	var handles []string
	for _, word := range []string{"one", "two", "three"} {
		info, err := c.Put(ctx, []byte(word), client.PinnedBy(lease)) // each on the next node
		if err != nil {
			log.Fatal(err)
		}
		handles = append(handles, info.Handle)
	}
	for i, r := range must(c.ResolveMany(ctx, handles)) {
		switch {
		case errors.Is(r.Err, client.ErrNodeUnavailable):
			fmt.Println(handles[i], "is on a node that is gone")
		case r.Err != nil:
			fmt.Println(handles[i], r.Err)
		default:
			fmt.Printf("%s\n", r.Data)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}
