package auth

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Rules are an auth file's grants: which token hashes and which client
// certificates are who, with what role.
type Rules struct {
	// tokens are in file order; a token is found by comparing its hash
	// with every one of them in constant time, so that how long a lookup
	// takes says nothing about which hash it matched, or how closely.
	tokens []tokenRule
	// certs maps a certificate identity (SPIFFE ID or DNS SAN) to its
	// role; anyCert, when set, is the role of every other verified one.
	certs   map[string]Role
	anyCert Role
}

type tokenRule struct {
	hash [32]byte
	id   Identity
}

// Len is how many rules there are.
func (r *Rules) Len() int {
	n := len(r.tokens) + len(r.certs)
	if r.anyCert != RoleNone {
		n++
	}
	return n
}

// MaxNameBytes is the longest identity name: names are written into logs,
// span attributes and error metadata.
const MaxNameBytes = 128

// maxLineBytes bounds one line of the file; a rule is far shorter.
const maxLineBytes = 4096

// ParseError is a line of the auth file that is not a rule.
type ParseError struct {
	Line int    // 1-based
	Msg  string // what is wrong, and what is wanted
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// ParseRules reads an auth file: one rule a line, `#` starts a comment,
// fields separated by white space:
//
//	token <hex SHA-256 of the token> <identity> <role>
//	cert  <SPIFFE ID or DNS SAN, or * for any verified certificate> <role>
//
// It returns the first line that is wrong, as a *ParseError.
func ParseRules(r io.Reader) (*Rules, error) {
	rules := &Rules{certs: map[string]Role{}}
	seen := map[[32]byte]int{} // token hash -> line
	certLine := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxLineBytes)
	n := 0
	for sc.Scan() {
		n++
		fail := func(format string, args ...any) error {
			return &ParseError{Line: n, Msg: fmt.Sprintf(format, args...)}
		}
		line := sc.Bytes()
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if !utf8.Valid(line) {
			return nil, fail("not UTF-8")
		}
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "token":
			if len(f) != 4 {
				return nil, fail("a token rule has 3 fields after \"token\": <hex SHA-256 of the token> <identity> <role>, not %d", len(f)-1)
			}
			var h [32]byte
			if len(f[1]) != 64 {
				return nil, fail("token hash %q is %d characters, want the 64 hex digits of its SHA-256 (printf %%s \"$TOKEN\" | sha256sum)", clip(f[1]), len(f[1]))
			}
			if _, err := hex.Decode(h[:], []byte(f[1])); err != nil {
				return nil, fail("token hash %q is not hex: want the 64 hex digits of its SHA-256 (printf %%s \"$TOKEN\" | sha256sum)", clip(f[1]))
			}
			if first, dup := seen[h]; dup {
				return nil, fail("token hash already given on line %d: one token is one identity", first)
			}
			if err := checkName(f[2]); err != nil {
				return nil, fail("identity %q: %v", clip(f[2]), err)
			}
			role, err := ParseRole(f[3])
			if err != nil {
				return nil, fail("%v", err)
			}
			seen[h] = n
			rules.tokens = append(rules.tokens, tokenRule{hash: h, id: Identity{Name: f[2], Role: role}})
		case "cert":
			if len(f) != 3 {
				return nil, fail("a cert rule has 2 fields after \"cert\": <SPIFFE ID, DNS SAN or *> <role>, not %d", len(f)-1)
			}
			if f[1] != "*" {
				if err := checkName(f[1]); err != nil {
					return nil, fail("certificate identity %q: %v", clip(f[1]), err)
				}
			}
			if first, dup := certLine[f[1]]; dup {
				return nil, fail("certificate identity %q already given on line %d", f[1], first)
			}
			role, err := ParseRole(f[2])
			if err != nil {
				return nil, fail("%v", err)
			}
			certLine[f[1]] = n
			if f[1] == "*" {
				rules.anyCert = role
			} else {
				rules.certs[f[1]] = role
			}
		default:
			return nil, fail("unknown rule %q: want token or cert", clip(f[0]))
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &ParseError{Line: n + 1, Msg: fmt.Sprintf("longer than %d bytes", maxLineBytes)}
		}
		return nil, err
	}
	return rules, nil
}

// checkName says what is wrong with an identity name, if anything.
func checkName(s string) error {
	if len(s) == 0 || len(s) > MaxNameBytes {
		return fmt.Errorf("%d bytes, want 1 to %d", len(s), MaxNameBytes)
	}
	for _, c := range s {
		if !unicode.IsPrint(c) || unicode.IsSpace(c) {
			return fmt.Errorf("holds %q: want printable characters and no white space", c)
		}
	}
	return nil
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}
