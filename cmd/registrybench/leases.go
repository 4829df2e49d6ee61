package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// Many idle lease streams: -mode leases opens -n lease streams to a
// registryd over -conns connections, each pinning the same -pins objects,
// holds them for -d, and prints the server's resident memory (VmRSS of
// -pid, read from /proc) before and while holding, per stream. -mode
// idle-streams opens as many bidirectional streams to the bare baseline
// (echo-serve), each answered once as a lease's open is: the floor any
// gRPC-Go server pays per idle stream. The difference is what registryd
// adds.
//
//	registrybench -mode leases -addr 127.0.0.1:7600 -pid PID -n 10000 -conns 16 -pins 4
//	registrybench -mode idle-streams -addr 127.0.0.1:7699 -pid PID -n 10000 -conns 16

// holdParams say how many streams to hold, over how many connections,
// whose server's memory to read, and for how long.
type holdParams struct {
	addr    string
	pid     int
	streams int
	conns   int
	pins    int
	hold    time.Duration
	collect bool   // registryd: force a collection (a GC) before the last reading
	metrics string // registryd's /metrics URL: print the breakdown (see breakdown)
}

// holdStreams opens the streams with open (one call per stream, on the
// connection it is given), holds them for p.hold and prints the server's
// RSS per stream.
func holdStreams(mode string, p holdParams, setup func(ccs []*grpc.ClientConn) (func(ctx context.Context, cc *grpc.ClientConn) error, error)) error {
	if p.pid <= 0 || p.streams < 1 || p.conns < 1 {
		return errors.New("-pid, -n and -conns must be positive")
	}
	ccs := make([]*grpc.ClientConn, p.conns)
	for i := range ccs {
		cc, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		cc.Connect()
		ccs[i] = cc
	}
	open, err := setup(ccs)
	if err != nil {
		return err
	}
	before, err := rss(p.pid)
	if err != nil {
		return err
	}
	var parts0 runtimeParts
	if p.metrics != "" {
		if parts0, err = scrapeParts(p.metrics); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends every stream
	start := time.Now()
	// A few openers per connection: opening 10k streams one by one would
	// take a round trip each.
	var wg sync.WaitGroup
	errs := make([]error, p.conns*4)
	for w := range errs {
		wg.Go(func() {
			for i := w; i < p.streams; i += len(errs) {
				if err := open(ctx, ccs[i%p.conns]); err != nil {
					errs[w] = fmt.Errorf("stream %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	opened := time.Since(start)
	// Read the memory through the hold: the last reading is the one
	// printed, after the server's garbage from opening had time to go.
	deadline := time.Now().Add(p.hold)
	holding := before
	for {
		if holding, err = rss(p.pid); err != nil {
			return err
		}
		if !time.Now().Before(deadline) {
			break
		}
		time.Sleep(min(time.Second, time.Until(deadline)))
	}
	line := fmt.Sprintf("%s n=%d conns=%d pins=%d open_s=%.1f rss_before_kib=%d rss_holding_kib=%d per_stream_kib=%.1f",
		mode, p.streams, p.conns, p.pins, opened.Seconds(), before>>10, holding>>10, float64(holding-before)/float64(p.streams)/1024)
	if p.collect || p.metrics != "" {
		if _, err := registryv1.NewAdminServiceClient(ccs[0]).Collect(context.Background(), &registryv1.CollectRequest{}); err != nil {
			return err
		}
		after, err := rss(p.pid)
		if err != nil {
			return err
		}
		line += fmt.Sprintf(" rss_after_gc_kib=%d per_stream_after_gc_kib=%.1f", after>>10, float64(after-before)/float64(p.streams)/1024)
	}
	if p.metrics != "" {
		parts, err := scrapeParts(p.metrics)
		if err != nil {
			return err
		}
		n := float64(p.streams)
		line += fmt.Sprintf(" goroutines_per_stream=%.2f stack_kib=%.1f heap_live_kib=%.1f heap_inuse_kib=%.1f",
			(parts.goroutines-parts0.goroutines)/n, (parts.stack-parts0.stack)/n/1024,
			(parts.heapLive-parts0.heapLive)/n/1024, (parts.heapInuse-parts0.heapInuse)/n/1024)
	}
	fmt.Println(line)
	return nil
}

// runtimeParts are the figures of registryd's Go runtime that say where
// a stream's memory goes: goroutines, their stacks (the stack spans in
// use), and the heap, live and in spans.
type runtimeParts struct{ goroutines, stack, heapLive, heapInuse float64 }

// scrapeParts reads runtimeParts from the Prometheus text at url (Go's
// collector, which registryd serves on --metrics-addr).
func scrapeParts(url string) (runtimeParts, error) {
	resp, err := http.Get(url) //nolint:gosec,noctx // a loopback URL the bench's caller gives
	if err != nil {
		return runtimeParts{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return runtimeParts{}, err
	}
	var out runtimeParts
	fields := map[string]*float64{
		"go_goroutines":                 &out.goroutines,
		"go_memstats_stack_inuse_bytes": &out.stack,
		"go_memstats_heap_alloc_bytes":  &out.heapLive,
		"go_memstats_heap_inuse_bytes":  &out.heapInuse,
	}
	found := 0
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if f := fields[name]; ok && f != nil {
			if *f, err = strconv.ParseFloat(strings.TrimSpace(value), 64); err != nil {
				return runtimeParts{}, fmt.Errorf("%s: %w", name, err)
			}
			found++
		}
	}
	if found != len(fields) {
		return runtimeParts{}, fmt.Errorf("%s: %d of the %d Go runtime figures", url, found, len(fields))
	}
	return out, nil
}

// holdLeases: each stream opens a lease and pins p.pins objects, which a
// keeper lease put, so that they stay whatever the streams do.
func holdLeases(p holdParams, payload []byte) error {
	return holdStreams("leases", p, func(ccs []*grpc.ClientConn) (func(context.Context, *grpc.ClientConn) error, error) {
		ctx := context.Background()
		rs := registryv1.NewRegistryServiceClient(ccs[0])
		keeper, err := openLease(ctx, rs, "registrybench keeper")
		if err != nil {
			return nil, err
		}
		handles := make([]string, p.pins)
		for i := range handles {
			put, err := rs.Put(ctx, &registryv1.PutRequest{Data: payload, LeaseId: keeper.id})
			if err != nil {
				return nil, err
			}
			handles[i] = put.GetHandle()
		}
		return func(ctx context.Context, cc *grpc.ClientConn) error {
			stream, err := registryv1.NewRegistryServiceClient(cc).Lease(ctx)
			if err != nil {
				return err
			}
			lc := &leaseConn{stream: stream}
			if _, err := lc.do(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: &registryv1.OpenLease{ClientName: "registrybench holder"}}}); err != nil {
				return err
			}
			if len(handles) == 0 {
				return nil
			}
			resp, err := lc.do(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: handles}}})
			if err != nil {
				return err
			}
			if e := resp.GetError(); e != nil {
				return errors.New(e.GetMessage())
			}
			return nil
		}, nil
	})
}

// holdIdle: each stream sends one message and reads its answer, as a
// lease's open, then stays open.
func holdIdle(p holdParams) error {
	return holdStreams("idle-streams", p, func([]*grpc.ClientConn) (func(context.Context, *grpc.ClientConn) error, error) {
		return func(ctx context.Context, cc *grpc.ClientConn) error {
			stream, err := testpb.NewTestServiceClient(cc).FullDuplexCall(ctx)
			if err != nil {
				return err
			}
			if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}, nil
	})
}

// FullDuplexCall answers each message with an empty one until the client
// ends the stream: the bare floor of an idle bidirectional stream, one
// handler goroutine blocked in Recv.
func (s *echoServer) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
}

// rss reads process pid's resident set size (VmRSS) from Linux's /proc.
func rss(pid int) (int64, error) {
	return procStatus(fmt.Sprintf("/proc/%d/status", pid), "VmRSS")
}

// procStatus reads one figure of a Linux /proc status file, in bytes.
func procStatus(file, key string) (int64, error) {
	status, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", key, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("%s: not in %s", key, file)
}
