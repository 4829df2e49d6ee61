// Command registrybench drives a registryd with N concurrent callers for a
// fixed time and prints ops/s and latency percentiles. It also carries its
// own baseline, a bare gRPC-Go echo server answering the same payload, so
// that registryd and the floor of any gRPC-Go service can be compared in
// one run on one machine (see docs/PERFORMANCE.md).
//
//	registrybench -mode echo-serve -addr 127.0.0.1:7699 &
//	registrybench -mode echo -addr 127.0.0.1:7699 -c 16
//	registrybench -mode resolve -addr 127.0.0.1:7600 -c 16
//
// The peers: -mode etcd-get (a serializable Range of one key) and -mode
// etcd-put drive an etcd member at -addr with etcd's own Go client.
//
// Large objects: -mode download fetches one object of -size bytes with the
// Go client's Download, over and over, and -mode stream fetches the same
// bytes from the baseline's server-streaming call, in -chunk messages;
// both print MB/s. -mode transfer uploads one object of -size bytes from
// a generated stream and downloads it again, checks every byte, and prints
// both rates and its own peak RSS.
//
//	registrybench -mode stream -addr 127.0.0.1:7699 -size 64MiB -c 1
//	registrybench -mode download -addr 127.0.0.1:7600 -size 64MiB -c 1
//	registrybench -mode transfer -addr 127.0.0.1:7600 -size 1GiB
//
// Many idle streams: -mode leases holds -n lease streams over -conns
// connections and prints the RSS of registryd's process -pid per stream;
// -mode idle-streams does the same to the baseline (see leases.go and
// bench/leases.sh).
//
// At scale: -objects N first puts N pinned objects, then resolves them at
// random (registryd --max-pins-per-lease=0 --max-pinned-bytes=0).
//
//	registrybench -mode resolve -objects 10000000 -size 100 -c 64
//
// -mode fill-weak puts -n WEAK objects and stops: a forced collection of them
// can then be timed with registryctl collect (see fillweak.go).
//
// The cluster's capacity model (docs/CLUSTER.md, bench/cluster.sh): -mode
// etcd-members registers -n simulated nodes in the etcd at -etcd as
// registryd does, watched by -watchers clients (see members.go); -mode
// placement spreads -objects puts over -n nodes by each placement policy
// (see placement.go).
//
//	registrybench -mode etcd-members -etcd http://127.0.0.1:2379 -n 1000 -watchers 1000
//	registrybench -mode placement -n 1000 -objects 10000000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "registrybench:", err)
		os.Exit(1)
	}
}

// caller makes one call as worker w.
type caller func(ctx context.Context, w int) error

func run() error {
	mode := flag.String("mode", "resolve", "echo-serve | echo | put | fill-weak | resolve | resolve-collected | stat | pin-unpin | batch-resolve | batch-pin | etcd-get | etcd-put | stream | download | transfer | leases | idle-streams | etcd-members | placement")
	addr := flag.String("addr", "127.0.0.1:7600", "target address (for echo-serve: where to listen)")
	conc := flag.Int("c", 16, "concurrent callers")
	dur := flag.Duration("d", 5*time.Second, "how long to drive the load")
	var size, chunk byteSize = 512, 1 << 20
	flag.Var(&size, "size", "payload `size`, such as 512, 64MiB or 1GiB")
	flag.Var(&chunk, "chunk", "for stream: bytes per message, as Download sends them")
	var hold holdParams
	flag.IntVar(&hold.pid, "pid", 0, "for leases and idle-streams: the server's process id, whose RSS is read; for etcd-members: etcd's, whose CPU and RSS are read")
	flag.IntVar(&hold.streams, "n", 1000, "for leases and idle-streams: streams to hold; for fill-weak: objects to put; for etcd-members and placement: nodes")
	flag.IntVar(&hold.conns, "conns", 16, "for leases and idle-streams: connections to spread them over")
	flag.IntVar(&hold.pins, "pins", 4, "for leases: objects each lease pins")
	flag.BoolVar(&hold.collect, "collect", false, "for leases: force a collection (a GC) and read the RSS once more")
	flag.StringVar(&hold.metrics, "metrics", "", "for leases: registryd's /metrics `URL`: also print its goroutines, stacks and live heap per stream, after a forced collection")
	batch := flag.Int("batch", 100, "for batch-resolve and batch-pin: objects per call (see batch.go)")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile to `file`")
	objects := flag.Int("objects", 0, "for resolve: first put this many objects, pinned, and resolve them at random (see fill); for placement: puts to place")
	mp := membersParams{cluster: "bench", conc: 32}
	etcdURLs := flag.String("etcd", "http://127.0.0.1:2379", "for etcd-members: etcd's client URLs, comma-separated")
	flag.StringVar(&mp.metrics, "etcd-metrics", "", "for etcd-members: etcd's Prometheus `URL` (http://127.0.0.1:2379/metrics), to count the keepalives etcd received")
	flag.IntVar(&mp.watchers, "watchers", 100, "for etcd-members: clients watching the nodes")
	flag.IntVar(&mp.nodeClients, "node-clients", 100, "for etcd-members: etcd clients the simulated nodes share")
	flag.IntVar(&mp.watchClients, "watch-clients", 100, "for etcd-members: etcd clients the watchers share")
	flag.DurationVar(&mp.ttl, "ttl", 10*time.Second, "for etcd-members: the nodes' etcd lease TTL (registryd --etcd-ttl)")
	flag.IntVar(&mp.changes, "changes", 10, "for etcd-members: membership changes whose fan-out is timed")
	flag.StringVar(&mp.connAddr, "conn-addr", "", "for etcd-members: a gRPC server (echo-serve) in another process, to measure a connected ClientConn's heap")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *conc < 1 || *dur <= 0 || size < 1 || chunk < 1 {
		return errors.New("-c, -d, -size and -chunk must be positive")
	}
	if *mode == "transfer" {
		return transfer(*addr, int64(size))
	}
	if size > 64<<20 {
		return errors.New("-size above 64MiB is for -mode transfer only")
	}
	payload := make([]byte, size)

	hold.addr, hold.hold = *addr, *dur
	switch *mode {
	case "etcd-members":
		mp.etcd, mp.nodes, mp.steady, mp.pid = strings.Split(*etcdURLs, ","), hold.streams, *dur, hold.pid
		return etcdMembers(mp)
	case "placement":
		return placement(os.Stdout, hold.streams, *objects, *conc)
	case "leases":
		return holdLeases(hold, payload)
	case "idle-streams":
		return holdIdle(hold)
	}

	if *mode == "echo-serve" {
		var lc net.ListenConfig
		lis, err := lc.Listen(context.Background(), "tcp", *addr)
		if err != nil {
			return err
		}
		s := grpc.NewServer()
		testpb.RegisterTestServiceServer(s, &echoServer{payload: payload})
		return s.Serve(lis)
	}
	if *mode == "fill-weak" {
		return fillWeak(*addr, payload, *conc, hold.streams, *dur)
	}
	if *mode == "stream" || *mode == "download" {
		return throughput(*mode, *addr, payload, int(chunk), *conc, *dur)
	}

	if batchModes[*mode] {
		return runBatch(*mode, *addr, payload, *conc, *batch, *dur)
	}
	var call caller
	if strings.HasPrefix(*mode, "etcd-") {
		c, done, err := etcdCaller(*mode, *addr, payload)
		if err != nil {
			return err
		}
		defer done()
		call = c
	} else {
		cc, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		if call, err = setup(*mode, cc, payload, *conc, *objects); err != nil {
			return err
		}
	}
	lat, elapsed, err := drive(call, *conc, *dur)
	if err != nil {
		return err
	}
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("%s c=%d size=%d ops/s=%.0f p50=%v p99=%v n=%d\n", *mode, *conc, size,
		float64(len(lat))/elapsed.Seconds(), pct(0.5), pct(0.99), len(lat))
	return nil
}

type echoServer struct {
	testpb.UnimplementedTestServiceServer
	payload []byte
}

func (s *echoServer) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: s.payload}}, nil
}

// StreamingOutputCall sends the payload in messages of the sizes asked
// for: the bare floor of a server streaming the same bytes as Download.
func (s *echoServer) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	off := 0
	for _, p := range req.GetResponseParameters() {
		n := min(int(p.GetSize()), len(s.payload)-off)
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: s.payload[off : off+n]}}); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// setup prepares what mode needs on the server and returns the call to
// repeat.
func setup(mode string, cc *grpc.ClientConn, payload []byte, conc, objects int) (caller, error) {
	ctx := context.Background()
	rs := registryv1.NewRegistryServiceClient(cc)
	if objects > 0 {
		if mode != "resolve" {
			return nil, errors.New("-objects is for -mode resolve")
		}
		handles, err := fill(ctx, rs, payload, objects, conc)
		if err != nil {
			return nil, err
		}
		return resolveAny(rs, handles, conc), nil
	}
	switch mode {
	case "echo":
		tc := testpb.NewTestServiceClient(cc)
		return func(ctx context.Context, _ int) error {
			_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{})
			return err
		}, nil
	case "put":
		return func(ctx context.Context, _ int) error {
			_, err := rs.Put(ctx, &registryv1.PutRequest{Data: payload})
			return err
		}, nil
	case "resolve", "stat", "pin-unpin":
		// One object pinned by a lease held for the whole run, so that it
		// is never collected under the load.
		keeper, err := openLease(ctx, rs, "registrybench keeper")
		if err != nil {
			return nil, err
		}
		put, err := rs.Put(ctx, &registryv1.PutRequest{Data: payload, LeaseId: keeper.id})
		if err != nil {
			return nil, err
		}
		h := put.GetHandle()
		switch mode {
		case "resolve":
			return func(ctx context.Context, _ int) error {
				_, err := rs.Resolve(ctx, &registryv1.ResolveRequest{Handle: h})
				return err
			}, nil
		case "stat":
			return func(ctx context.Context, _ int) error {
				_, err := rs.Stat(ctx, &registryv1.StatRequest{Handle: h})
				return err
			}, nil
		}
		// pin-unpin: each worker has a lease stream of its own.
		workers := make([]*leaseConn, conc)
		for i := range workers {
			if workers[i], err = openLease(ctx, rs, fmt.Sprint("registrybench ", i)); err != nil {
				return nil, err
			}
		}
		return func(_ context.Context, w int) error {
			return workers[w].pinUnpin(h)
		}, nil
	case "resolve-collected":
		put, err := rs.Put(ctx, &registryv1.PutRequest{Data: payload})
		if err != nil {
			return nil, err
		}
		if _, err := registryv1.NewAdminServiceClient(cc).Collect(ctx, &registryv1.CollectRequest{}); err != nil {
			return nil, err
		}
		h := put.GetHandle()
		return func(ctx context.Context, _ int) error {
			if _, err := rs.Resolve(ctx, &registryv1.ResolveRequest{Handle: h}); err == nil {
				return errors.New("the object was not collected")
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("unknown -mode %q", mode)
}

// drive runs call from conc workers for dur and returns every latency,
// sorted.
func drive(call caller, conc int, dur time.Duration) ([]time.Duration, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	lat := make([][]time.Duration, conc)
	errs := make([]error, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				t := time.Now()
				if err := call(context.Background(), w); err != nil {
					errs[w] = err
					return
				}
				lat[w] = append(lat[w], time.Since(t))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return nil, 0, err
	}
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return nil, 0, errors.New("no call completed")
	}
	slices.Sort(all)
	return all, elapsed, nil
}

// leaseConn is one open lease stream.
type leaseConn struct {
	stream grpc.BidiStreamingClient[registryv1.LeaseRequest, registryv1.LeaseResponse]
	id     string
}

func openLease(ctx context.Context, rs registryv1.RegistryServiceClient, name string) (*leaseConn, error) {
	stream, err := rs.Lease(ctx)
	if err != nil {
		return nil, err
	}
	lc := &leaseConn{stream: stream}
	resp, err := lc.do(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: &registryv1.OpenLease{ClientName: name}}})
	if err != nil {
		return nil, err
	}
	lc.id = resp.GetOpened().GetLeaseId()
	return lc, nil
}

func (lc *leaseConn) do(req *registryv1.LeaseRequest) (*registryv1.LeaseResponse, error) {
	if err := lc.stream.Send(req); err != nil {
		return nil, err
	}
	return lc.stream.Recv()
}

// pinUnpin pins h and unpins it: two round trips on the stream.
func (lc *leaseConn) pinUnpin(h string) error {
	if _, err := lc.do(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: []string{h}}}}); err != nil {
		return err
	}
	_, err := lc.do(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Unpin{Unpin: &registryv1.UnpinHandles{Handles: []string{h}}}})
	return err
}
