package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/testpki"
)

// TestOneIdentityCannotUseAnothersLease: alice's lease, with its pins, is
// hers. Bob, another client, cannot resume it, Put into it, or Resolve,
// Download or Upload with it, through the Go client or raw gRPC where the
// client would not let him try: each is PERMISSION_DENIED LEASE_NOT_OWNED
// naming the lease, and leaves her pins, the registry's objects and her
// stream as they were. Bob may not list leases; the admin sees alice's,
// and that she owns her objects.
func TestOneIdentityCannotUseAnothersLease(t *testing.T) {
	d, _ := startAuthDaemon(t, tokenRule("alice-token", "alice", "client")+
		tokenRule("bob-token", "bob", "client")+tokenRule("admin-token", "ops", "admin"))
	admin := dialToken(t, d.Addr, "admin-token")
	bob := dialToken(t, d.Addr, "bob-token")
	aliceC := goClient(t, d.Addr, regclient.WithToken("alice-token"))
	bobC := goClient(t, d.Addr, regclient.WithToken("bob-token"))

	l, err := aliceC.Lease(rpcCtx(t), regclient.LeaseName("alice-app"), regclient.Grace(time.Minute))
	if err != nil {
		t.Fatalf("alice's lease: %v", err)
	}
	var handles []string
	for _, data := range []string{"alice one", "alice two"} {
		info, err := aliceC.Put(rpcCtx(t), []byte(data), regclient.PinnedBy(l))
		if err != nil {
			t.Fatalf("alice's Put with her lease: %v", err)
		}
		handles = append(handles, info.Handle)
	}
	h := handles[0]

	stats := func() *registryv1.GetStatsResponse {
		t.Helper()
		s, err := admin.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{})
		if err != nil {
			t.Fatalf("admin GetStats: %v", err)
		}
		// Only what a refusal could change: not alice's own resolves.
		return &registryv1.GetStatsResponse{Objects: s.GetObjects(), Bytes: s.GetBytes(), Pins: s.GetPins(), Puts: s.GetPuts(),
			LeasesAttached: s.GetLeasesAttached(), LeasesDetached: s.GetLeasesDetached()}
	}
	before := stats()
	// intact checks, after one of bob's attempts, that alice's lease and
	// pins are as they were and the registry holds nothing new.
	intact := func(after string) {
		t.Helper()
		li := findLease(t, admin, l.ID())
		if li == nil || li.GetIdentity() != "alice" || li.GetPinCount() != 2 || !li.GetAttached() || li.GetClientName() != "alice-app" {
			t.Fatalf("after %s: admin ListLeases shows alice's lease as %v, want attached, identity alice, pin_count 2", after, li)
		}
		for _, h := range handles {
			insp, err := admin.admin.InspectObject(rpcCtx(t), &registryv1.InspectObjectRequest{Handle: h})
			if err != nil {
				t.Fatalf("after %s: admin InspectObject: %v", after, err)
			}
			pins := insp.GetPins()
			if insp.GetOwner() != "alice" || len(pins) != 1 || pins[0].GetLeaseId() != l.ID() || pins[0].GetIdentity() != "alice" ||
				insp.GetInfo().GetState() != registryv1.ObjectState_OBJECT_STATE_PINNED {
				t.Fatalf("after %s: InspectObject(%s) = owner %q state %v pins %v, want owner alice, PINNED by alice's lease only",
					after, h, insp.GetOwner(), insp.GetInfo().GetState(), pins)
			}
		}
		if got := stats(); !proto.Equal(got, before) {
			t.Fatalf("after %s: stats changed from %v to %v", after, before, got)
		}
		select {
		case <-l.Done():
			t.Fatalf("after %s: alice's lease ended: %v", after, l.Err())
		default:
		}
	}
	intact("alice's puts")

	// notOwned checks a refusal: LEASE_NOT_OWNED naming alice's lease.
	notOwned := func(what string, err error) {
		t.Helper()
		info := wantStatus(t, err, codes.PermissionDenied, "LEASE_NOT_OWNED")
		if got := info.GetMetadata()["lease_id"]; got != l.ID() {
			t.Fatalf("%s: metadata lease_id %q, want alice's %s", what, got, l.ID())
		}
		intact(what)
	}
	payload := []byte("bob's bytes")

	t.Run("go client", func(t *testing.T) {
		_, err := bobC.Put(rpcCtx(t), payload, regclient.PinnedBy(l))
		if !errors.Is(err, regclient.ErrPermissionDenied) {
			t.Fatalf("bob's Put with alice's lease: %v, want ErrPermissionDenied", err)
		}
		notOwned("bob's client Put", err)
		_, err = bobC.Upload(rpcCtx(t), bytes.NewReader(payload), int64(len(payload)), regclient.PinnedBy(l))
		if !errors.Is(err, regclient.ErrPermissionDenied) {
			t.Fatalf("bob's Upload with alice's lease: %v, want ErrPermissionDenied", err)
		}
		notOwned("bob's client Upload", err)
	})

	t.Run("raw gRPC", func(t *testing.T) {
		_, err := tryOpenLease(t, bob, &registryv1.OpenLease{ResumeLeaseId: l.ID(), Grace: durationpb.New(time.Minute)})
		notOwned("bob's resume", err)

		_, err = bob.reg.Put(rpcCtx(t), &registryv1.PutRequest{Data: payload, LeaseId: l.ID()})
		notOwned("bob's Put", err)

		_, err = bob.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: h, LeaseId: l.ID()})
		notOwned("bob's Resolve", err)

		dl, err := bob.reg.Download(rpcCtx(t), &registryv1.DownloadRequest{Handle: h, LeaseId: l.ID()})
		if err != nil {
			t.Fatalf("Download: %v", err)
		}
		_, err = dl.Recv()
		notOwned("bob's Download", err)

		notOwned("bob's Upload", rawUpload(t, bob, payload, l.ID()))
	})

	t.Run("admin API", func(t *testing.T) {
		_, err := bob.admin.ListLeases(rpcCtx(t), &registryv1.ListLeasesRequest{})
		info := wantStatus(t, err, codes.PermissionDenied, "ROLE_FORBIDDEN")
		if md := info.GetMetadata(); md["identity"] != "bob" || md["role"] != "client" {
			t.Fatalf("ROLE_FORBIDDEN metadata %v, want identity bob role client", md)
		}
		_, err = bob.admin.InspectObject(rpcCtx(t), &registryv1.InspectObjectRequest{Handle: h})
		wantStatus(t, err, codes.PermissionDenied, "ROLE_FORBIDDEN")
		intact("bob's admin calls")
	})

	// Alice's lease still works for her, on the stream it always had.
	if data, _, err := l.Resolve(rpcCtx(t), h); err != nil || string(data) != "alice one" {
		t.Fatalf("alice's Resolve with her lease: %q, %v", data, err)
	}
	if _, err := aliceC.Put(rpcCtx(t), []byte("alice three"), regclient.PinnedBy(l)); err != nil {
		t.Fatalf("alice's Put after bob's attempts: %v", err)
	}
	if n := l.Resumes(); n != 0 {
		t.Fatalf("alice's lease was resumed %d times: bob's attempts cut her stream", n)
	}
	if li := findLease(t, admin, l.ID()); li.GetPinCount() != 3 {
		t.Fatalf("alice's lease after her third Put: %v, want pin_count 3", li)
	}
	if n, err := l.Close(rpcCtx(t)); err != nil || n != 3 {
		t.Fatalf("alice's Close: released %d, %v; want 3", n, err)
	}
}

// goClient dials addr with the Go client and opts, closed when the test ends.
func goClient(t *testing.T, addr string, opts ...regclient.Option) *regclient.Client {
	t.Helper()
	c, err := regclient.Dial(addr, append(opts, regclient.WithoutTracing())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawUpload uploads data in one chunk with leaseID, as a client library
// that checks nothing would, and returns the stream's error.
func rawUpload(t *testing.T, c *client, data []byte, leaseID string) error {
	t.Helper()
	st, err := c.reg.Upload(rpcCtx(t))
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	crc := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	for _, m := range []*registryv1.UploadRequest{
		{Kind: &registryv1.UploadRequest_Header{Header: &registryv1.UploadHeader{Size: int64(len(data)), LeaseId: leaseID}}},
		{Kind: &registryv1.UploadRequest_Chunk{Chunk: data}},
		{Kind: &registryv1.UploadRequest_Trailer{Trailer: &registryv1.UploadTrailer{Crc32C: crc}}},
	} {
		if err := st.Send(m); err != nil {
			break // the server answered already; CloseAndRecv says how
		}
	}
	_, err = st.CloseAndRecv()
	return err
}

// rawCodec sends and receives bytes as they are, so that every method can
// be called with an empty message without knowing its type.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// callEmpty calls the method name of sd with an empty message and returns
// the first answer's error (nil for a message).
func callEmpty(ctx context.Context, conn *grpc.ClientConn, name string, sd *grpc.StreamDesc) error {
	raw := grpc.ForceCodecV2(rawCodec{})
	var out []byte
	if sd == nil {
		return conn.Invoke(ctx, name, []byte{}, &out, raw)
	}
	st, err := conn.NewStream(ctx, sd, name, raw)
	if err != nil {
		return err
	}
	if err := st.SendMsg([]byte{}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	return st.RecvMsg(&out)
}

// TestAnonymousIsUnauthenticatedEverywhereButHealth: against registryd
// --auth-file, a call without credentials to every method of both
// services and reflection is UNAUTHENTICATED CREDENTIALS_MISSING with
// ErrorInfo, health answers SERVING, and registryctl without --token
// exits 1 naming CREDENTIALS_MISSING.
func TestAnonymousIsUnauthenticatedEverywhereButHealth(t *testing.T) {
	d, _ := startAuthDaemon(t, tokenRule("a-token", "ops", "admin"))
	anon := dial(t, d.Addr)
	n := 0
	for _, sd := range []grpc.ServiceDesc{registryv1.RegistryService_ServiceDesc, registryv1.AdminService_ServiceDesc, reflectionpb.ServerReflection_ServiceDesc} {
		var calls []struct {
			name string
			desc *grpc.StreamDesc
		}
		for _, m := range sd.Methods {
			calls = append(calls, struct {
				name string
				desc *grpc.StreamDesc
			}{"/" + sd.ServiceName + "/" + m.MethodName, nil})
		}
		for _, s := range sd.Streams {
			calls = append(calls, struct {
				name string
				desc *grpc.StreamDesc
			}{"/" + sd.ServiceName + "/" + s.StreamName, &grpc.StreamDesc{ServerStreams: s.ServerStreams, ClientStreams: s.ClientStreams}})
		}
		for _, c := range calls {
			t.Run(strings.TrimPrefix(c.name, "/"), func(t *testing.T) {
				wantStatus(t, callEmpty(rpcCtx(t), anon.conn, c.name, c.desc), codes.Unauthenticated, "CREDENTIALS_MISSING")
			})
			n++
		}
	}
	if n < 15 {
		t.Fatalf("walked %d methods; the service descriptors lost some", n)
	}

	resp, err := healthpb.NewHealthClient(anon.conn).Check(rpcCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("anonymous health Check: %v, %v; want SERVING", resp, err)
	}
	wantSuccess(t, ctl(t, d.Addr, "health"))
	for _, args := range [][]string{{"stats"}, {"get", "obj_none"}, {"put", "-"}} {
		wantErrLine(t, runCtl(t, ctlOpts{addr: d.Addr, stdin: []byte("x")}, args...), ctlError, "CREDENTIALS_MISSING")
	}
}

// dialMTLS dials addr over TLS trusting ca and presenting pair.
func dialMTLS(t *testing.T, addr string, ca *testpki.CA, pair *testpki.Pair) *client {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair.TLSCertificate(t)}}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{conn: conn, reg: registryv1.NewRegistryServiceClient(conn), admin: registryv1.NewAdminServiceClient(conn)}
}

// TestMutualTLSIdentities: client certificates are identities. With an
// auth file, alice's SPIFFE ID is a client (puts and resolves, no
// AdminService), admin.test's DNS SAN is an admin (registryctl stats
// too), and a verified certificate no rule names has no role. Without
// one, each certificate is its own identity with role admin. Two client
// certificates are two identities: with the auth file, bob's cannot use
// alice's lease (LEASE_NOT_OWNED); without it, both are admins, so one may
// take over the other's lease, which stays its owner's.
func TestMutualTLSIdentities(t *testing.T) {
	ca := testpki.NewCA(t, "e2e CA")
	srv := ca.Server(t)
	alice, bob := ca.Client(t, "spiffe://test/alice"), ca.Client(t, "spiffe://test/bob")
	adm, nobody := ca.Client(t, "admin.test"), ca.Client(t, "spiffe://test/nobody")

	t.Run("auth file", func(t *testing.T) {
		d, _ := startTLSAuthDaemon(t, srv, ca, "cert spiffe://test/alice client\ncert spiffe://test/bob client\ncert admin.test admin\n")
		a := dialMTLS(t, d.Addr, ca, alice)
		resp, err := a.reg.Put(rpcCtx(t), &registryv1.PutRequest{Data: []byte("alice over mTLS"), Linger: durationpb.New(time.Minute)}) // not collected before the Resolve
		if err != nil {
			t.Fatalf("alice's Put: %v", err)
		}
		h := resp.GetHandle()
		wantResolves(t, a, h, []byte("alice over mTLS"))
		_, err = a.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{})
		info := wantStatus(t, err, codes.PermissionDenied, "ROLE_FORBIDDEN")
		if md := info.GetMetadata(); md["identity"] != "spiffe://test/alice" || md["role"] != "client" {
			t.Fatalf("ROLE_FORBIDDEN metadata %v, want alice's SPIFFE ID and role client", md)
		}

		ad := dialMTLS(t, d.Addr, ca, adm)
		insp, err := ad.admin.InspectObject(rpcCtx(t), &registryv1.InspectObjectRequest{Handle: h})
		if err != nil || insp.GetOwner() != "spiffe://test/alice" {
			t.Fatalf("admin InspectObject: owner %q, %v; want spiffe://test/alice", insp.GetOwner(), err)
		}

		l := openLease(t, a, &registryv1.OpenLease{Grace: durationpb.New(time.Minute)})
		pinned := put(t, a, []byte("pinned by alice"), l.ID())
		b := dialMTLS(t, d.Addr, ca, bob)
		_, err = tryOpenLease(t, b, &registryv1.OpenLease{ResumeLeaseId: l.ID()})
		if info := wantStatus(t, err, codes.PermissionDenied, "LEASE_NOT_OWNED"); info.GetMetadata()["lease_id"] != l.ID() {
			t.Fatalf("LEASE_NOT_OWNED metadata %v, want lease_id %s", info.GetMetadata(), l.ID())
		}
		_, err = b.reg.Put(rpcCtx(t), &registryv1.PutRequest{Data: []byte("x"), LeaseId: l.ID()})
		wantStatus(t, err, codes.PermissionDenied, "LEASE_NOT_OWNED")
		_, err = b.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: pinned, LeaseId: l.ID()})
		wantStatus(t, err, codes.PermissionDenied, "LEASE_NOT_OWNED")
		if li := findLease(t, ad, l.ID()); li.GetIdentity() != "spiffe://test/alice" || li.GetPinCount() != 1 || !li.GetAttached() {
			t.Fatalf("after bob's attempts alice's lease is %v, want hers, attached, pin_count 1", li)
		}
		l.close(t, 1)

		nb := dialMTLS(t, d.Addr, ca, nobody)
		_, err = nb.reg.Put(rpcCtx(t), &registryv1.PutRequest{Data: []byte("x")})
		wantStatus(t, err, codes.PermissionDenied, "ROLE_FORBIDDEN")
		_, err = nb.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{})
		wantStatus(t, err, codes.PermissionDenied, "ROLE_FORBIDDEN")

		tlsArgs := func(p *testpki.Pair, args ...string) []string {
			return append([]string{"--tls", "--cacert", ca.CAFile, "--cert", p.CertFile, "--key", p.KeyFile}, args...)
		}
		r := ctl(t, d.Addr, tlsArgs(adm, "-w", "json", "stats")...)
		wantSuccess(t, r)
		var got struct{ Puts string }
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Puts != "2" {
			t.Fatalf("registryctl stats as the admin: %s (%v), want alice's two puts", r.stdout, err)
		}
		wantErrLine(t, ctl(t, d.Addr, tlsArgs(alice, "stats")...), ctlError, "ROLE_FORBIDDEN")
	})

	t.Run("no auth file", func(t *testing.T) {
		d := startDaemon(t, "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-client-ca", ca.CAFile)
		a, b := dialMTLS(t, d.Addr, ca, alice), dialMTLS(t, d.Addr, ca, nobody)
		l := openLease(t, a, &registryv1.OpenLease{Grace: durationpb.New(time.Minute)})
		h := put(t, a, []byte("pinned by alice"), l.ID())
		resp, err := b.reg.Put(rpcCtx(t), &registryv1.PutRequest{Data: []byte("put by nobody"), Linger: durationpb.New(time.Minute)}) // not collected before the inspection
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		hb := resp.GetHandle()
		for _, o := range []struct{ h, owner string }{{h, "spiffe://test/alice"}, {hb, "spiffe://test/nobody"}} {
			insp, err := b.admin.InspectObject(rpcCtx(t), &registryv1.InspectObjectRequest{Handle: o.h})
			if err != nil || insp.GetOwner() != o.owner {
				t.Fatalf("InspectObject(%s): owner %q, %v; want %s", o.h, insp.GetOwner(), err, o.owner)
			}
		}
		li := findLease(t, b, l.ID())
		if li.GetIdentity() != "spiffe://test/alice" || li.GetPinCount() != 1 || !li.GetAttached() {
			t.Fatalf("ListLeases shows alice's lease as %v, want identity spiffe://test/alice, attached, pin_count 1", li)
		}
		// Both are admins (mutual TLS without an auth file), and an admin
		// may take over anyone's lease: it stays alice's, with her pin.
		taken := openLease(t, b, &registryv1.OpenLease{ResumeLeaseId: l.ID()})
		if !taken.opened.GetResumed() || taken.opened.GetPinCount() != 1 {
			t.Fatalf("admin resume of alice's lease: %v, want resumed with pin_count 1", taken.opened)
		}
		if li := findLease(t, b, l.ID()); li.GetIdentity() != "spiffe://test/alice" {
			t.Fatalf("after the takeover ListLeases shows %v, want it still alice's", li)
		}
		wantStat(t, a, h, registryv1.ObjectState_OBJECT_STATE_PINNED, 1)
		taken.close(t, 1)
	})
}

// startTLSAuthDaemon starts registryd serving srv, requiring client
// certificates of ca, with an auth file holding rules.
func startTLSAuthDaemon(t *testing.T, srv *testpki.Pair, ca *testpki.CA, rules string) (*daemon, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth")
	writeAuthFile(t, path, rules)
	return startDaemon(t, "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-client-ca", ca.CAFile,
		"--auth-file", path, "--reload-interval", "1h"), path
}
