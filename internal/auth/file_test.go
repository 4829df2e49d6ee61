package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func hashOf(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func TestParseRulesReadsTokensAndCerts(t *testing.T) {
	file := "# registryd's callers\n" +
		"token " + hashOf("s3cret") + " ci-runner client  # the CI\n" +
		"\n" +
		"token\t" + strings.ToUpper(hashOf("dash")) + "\tgrafana\tviewer\n" +
		"cert spiffe://example.org/ops admin\n" +
		"cert * client\n"
	r, err := ParseRules(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 4 {
		t.Errorf("Len = %d, want 4", r.Len())
	}
	for token, want := range map[string]Identity{"s3cret": {"ci-runner", RoleClient}, "dash": {"grafana", RoleViewer}} {
		if got, ok := r.token(token); !ok || got != want {
			t.Errorf("token %q: got %v %v, want %v", token, got, ok, want)
		}
	}
	if _, ok := r.token("s3cret "); ok {
		t.Error("a token that is not in the file was found")
	}
	if got := r.cert("spiffe://example.org/ops"); got != RoleAdmin {
		t.Errorf("cert ops: %v, want admin", got)
	}
	if got := r.cert("other.example.org"); got != RoleClient {
		t.Errorf("cert *: %v, want client", got)
	}
}

func TestParseRulesSaysWhichLineIsWrong(t *testing.T) {
	good := "token " + hashOf("a") + " alice client\n"
	for _, tt := range []struct {
		name, line, want string
	}{
		{"unknown role", "token " + hashOf("b") + " bob root", `unknown role "root"`},
		{"bad hex", "token " + strings.Repeat("zz", 32) + " bob client", "not hex"},
		{"short hash", "token abcd bob client", "is 4 characters, want the 64 hex digits"},
		{"duplicate token hash", "token " + hashOf("a") + " mallory admin", "already given on line 1"},
		{"duplicate cert", "cert * client\ncert * admin", "already given on line 2"},
		{"too few fields", "token " + hashOf("b") + " bob", "3 fields"},
		{"cert too many fields", "cert a b c", "2 fields"},
		{"unknown rule", "user bob client", `unknown rule "user"`},
		{"long name", "token " + hashOf("b") + " " + strings.Repeat("n", 129) + " client", "129 bytes, want 1 to 128"},
		{"unprintable name", "token " + hashOf("b") + " bo\u0007b client", "printable"},
		{"no-break space separates fields", "token " + hashOf("b") + " bo\u00a0b client", "not 4"},
		{"not UTF-8", "token " + hashOf("b") + " bo\xffb client", "not UTF-8"},
		{"long line", strings.Repeat("#", maxLineBytes+1), "longer than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRules(strings.NewReader(good + tt.line + "\n"))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *ParseError", err)
			}
			wantLine := 2 + strings.Count(tt.line, "\n")
			if pe.Line != wantLine || !strings.Contains(pe.Msg, tt.want) {
				t.Errorf("got %q, want line %d saying %q", err, wantLine, tt.want)
			}
		})
	}
}

func TestRolesMayCallTheirMethodsOnly(t *testing.T) {
	const (
		put     = "/registry.v1.RegistryService/Put"
		stats   = "/registry.v1.AdminService/GetStats"
		leases  = "/registry.v1.AdminService/ListLeases"
		collect = "/registry.v1.AdminService/Collect"
		reflect = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
		other   = "/some.Other/Thing"
	)
	want := map[Role]map[string]bool{
		RoleNone:   {},
		RoleViewer: {stats: true, leases: true, reflect: true},
		RoleClient: {put: true, reflect: true},
		RoleAdmin:  {put: true, stats: true, leases: true, collect: true, reflect: true, other: true},
	}
	for role, allowed := range want {
		for _, m := range []string{put, stats, leases, collect, reflect, other} {
			if got := Allowed(role, m); got != allowed[m] {
				t.Errorf("Allowed(%v, %s) = %v, want %v", role, m, got, allowed[m])
			}
		}
	}
}

// FuzzAuthFile: any input either parses into rules whose every token
// rule is found by nothing but its own hash, or fails with a line number
// inside the input.
func FuzzAuthFile(f *testing.F) {
	f.Add("token " + hashOf("a") + " alice client\ncert * viewer\n")
	f.Add("# only a comment\n\n")
	f.Add("cert spiffe://example.org/x admin # trailing\n")
	f.Add("token " + hashOf("a") + " alice client\ntoken " + hashOf("a") + " bob admin\n")
	f.Fuzz(func(t *testing.T, file string) {
		r, err := ParseRules(strings.NewReader(file))
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				if pe.Line < 1 || pe.Line > strings.Count(file, "\n")+1 {
					t.Fatalf("error on line %d of a %d-line file: %v", pe.Line, strings.Count(file, "\n")+1, err)
				}
			}
			return
		}
		hashes := map[[32]byte]bool{}
		for _, tr := range r.tokens {
			if hashes[tr.hash] {
				t.Fatal("two rules with one token hash")
			}
			hashes[tr.hash] = true
			if err := checkName(tr.id.Name); err != nil || tr.id.Role == RoleNone {
				t.Fatalf("rule %v: name %v, role %v", tr.id, err, tr.id.Role)
			}
		}
		if _, ok := r.token(file); ok && hashes[sha256.Sum256([]byte(file))] != ok {
			t.Fatal("a token was found by a hash not in the file")
		}
	})
}
