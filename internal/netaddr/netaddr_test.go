package netaddr

import "testing"

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7600":               true,
		"127.3.4.5:7600":               true,
		"[::1]:7600":                   true,
		"localhost:7600":               true,
		"dns:///localhost:7600":        true,
		"registry.example.org:7600":    false,
		"10.0.0.7:7600":                false,
		"[::]:7600":                    false,
		":7600":                        false, // every interface
		"passthrough:///10.0.0.7:7600": false,
		"127.0.0.1":                    false, // no port: not an address
	} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
