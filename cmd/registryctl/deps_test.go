package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoDomainPackage: registryctl is a client. It links the Go
// client and the telemetry set-up, never the registry or the lease
// manager, whose code (and init-time state) a client has no use for.
func TestLinksNoDomainPackage(t *testing.T) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	out, err := exec.Command(gotool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps listed nothing")
	}
	const module = "github.com/weakref/registry/"
	for _, forbidden := range []string{"internal/registry", "internal/lease"} {
		for _, d := range deps {
			if d == module+forbidden || strings.HasPrefix(d, module+forbidden+"/") {
				t.Errorf("registryctl links %s", d)
			}
		}
	}
}
