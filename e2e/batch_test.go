package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// TestRegistryctlManyHandles runs registryctl stat and hold on more
// handles than one request carries, against the real registryd: every
// handle is answered, in order, each on its own.
func TestRegistryctlManyHandles(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	c := dialClient(t, d.Addr)
	ctx := testCtx(t)
	keep := openClientLease(t, ctx, c)
	const n = 1500
	hs := make([]string, n)
	for i := range hs {
		info, err := c.Put(ctx, []byte(fmt.Sprintf("object %d", i)), regclient.PinnedBy(keep))
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = info.Handle
	}

	t.Run("stat", func(t *testing.T) {
		r := ctl(t, d.Addr, append([]string{"stat"}, hs...)...)
		wantSuccess(t, r)
		rows := tableRows(r.stdout)
		if len(rows) != n+1 {
			t.Fatalf("%d rows for %d handles\n%s", len(rows), n, r)
		}
		for i, h := range hs {
			if row := rows[i+1]; row[0] != h || row[1] != "pinned" || row[4] != "1" {
				t.Fatalf("row %d = %q, want %s pinned once", i+1, row, h)
			}
		}
		r = ctl(t, d.Addr, "stat", hs[0], hs[1], "-w", "json")
		wantSuccess(t, r)
		var resp registryv1.BatchStatResponse
		decode(t, r, &resp)
		if len(resp.GetResults()) != 2 || resp.GetResults()[1].GetInfo().GetHandle() != hs[1] {
			t.Errorf("stat -w json = %v", &resp)
		}
	})

	t.Run("stat of handles with no object", func(t *testing.T) {
		gone, err := c.Put(ctx, []byte("soon collected"))
		if err != nil {
			t.Fatal(err)
		}
		wantSuccess(t, ctl(t, d.Addr, "gc"))
		r := ctl(t, d.Addr, "stat", hs[0], gone.Handle, hs[1])
		wantErrLine(t, r, ctlNotFound, "1 of 3 handles have no object")
		rows := tableRows(r.stdout)
		if len(rows) != 4 || rows[2][0] != gone.Handle || !strings.Contains(strings.Join(rows[2], " "), "OBJECT_COLLECTED") || rows[3][0] != hs[1] {
			t.Errorf("rows %q, want the collected one second, with its reason", rows)
		}
		r = ctl(t, d.Addr, "stat", hs[0], "obj_nope", gone.Handle)
		wantErrLine(t, r, ctlError, "2 of 3 handles have no object")
	})

	t.Run("hold", func(t *testing.T) {
		p := startCtl(t, ctlOpts{addr: d.Addr}, append([]string{"hold", "--client-name", "many"}, hs...)...)
		p.waitStderr(t, fmt.Sprintf("holding %d objects under lease", n))
		r := ctl(t, d.Addr, "stat", hs[0], hs[n-1])
		wantSuccess(t, r)
		for _, row := range tableRows(r.stdout)[1:] {
			if row[4] != "2" { // SIZE is two words: "8 B"
				t.Errorf("row %q: want 2 pins (the keeper's and hold's)", row)
			}
		}
		if r := p.interrupt(t); r.code != ctlOK {
			t.Fatalf("hold exited %d after the interrupt; stderr:\n%s", r.code, r.stderr)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := ctl(t, d.Addr, "stat", hs[n-1])
			if rows := tableRows(r.stdout); len(rows) == 2 && rows[1][4] == "1" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("hold's pins stayed after it ended: %s", r.stdout)
			}
		}
	})
}
