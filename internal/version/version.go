// Package version tells which build of the registry is running, from the
// build information the Go toolchain embeds in every binary.
package version

import (
	"runtime/debug"
	"strings"
)

// String returns the module version ("v1.2.3", or "(devel)" for a build
// from a checkout) followed by the VCS revision, its time and a "+dirty"
// mark when the toolchain recorded them, e.g.
// "(devel) 7e97e83c1a2b 2026-11-26T13:03:33Z+dirty".
func String() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return format(bi)
}

// format renders build information; split from String for tests.
func format(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, when string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	parts := []string{v}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		parts = append(parts, rev)
	}
	if when != "" {
		parts = append(parts, when)
	}
	out := strings.Join(parts, " ")
	if dirty {
		out += "+dirty"
	}
	return out
}
