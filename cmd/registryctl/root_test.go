package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// runWith runs registryctl in process with the given environment and
// returns its exit status and stderr. Only commands that fail before
// dialling are run this way; the e2e tests run the rest against a real
// registryd.
func runWith(env map[string]string, args ...string) (int, string, *app) {
	var stdout, stderr bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	err := execute(context.Background(), root)
	if err == nil {
		return exitOK, stderr.String(), a
	}
	msg, code := a.describe(err)
	return code, msg, a
}

func TestGlobalFlagsFallBackToEnvironment(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		addr    string
		timeout time.Duration
		output  string
	}{
		{"defaults", nil, nil, "127.0.0.1:7600", 10 * time.Second, "table"},
		{"env", map[string]string{"REGISTRYCTL_ADDR": "[::1]:9", "REGISTRYCTL_TIMEOUT": "2s", "REGISTRYCTL_OUTPUT": "json"}, nil,
			"[::1]:9", 2 * time.Second, "json"},
		{"flag wins over env", map[string]string{"REGISTRYCTL_ADDR": "[::1]:9", "REGISTRYCTL_OUTPUT": "json"},
			[]string{"--addr", "127.0.0.1:1", "-w", "yaml"}, "127.0.0.1:1", 10 * time.Second, "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// completion runs the persistent pre-run hook without dialling.
			code, msg, a := runWith(tt.env, append(tt.args, "completion", "bash")...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, msg)
			}
			if a.addr != tt.addr || a.timeout != tt.timeout || a.output != tt.output {
				t.Errorf("addr, timeout, output = %q, %s, %q; want %q, %s, %q", a.addr, a.timeout, a.output, tt.addr, tt.timeout, tt.output)
			}
		})
	}
}

func TestBadCommandLinesAreUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown command", nil, []string{"hodl"}, `unknown command "hodl"`},
		{"unknown flag", nil, []string{"ls", "--bogus"}, "unknown flag: --bogus; see 'registryctl ls --help'"},
		{"missing handle", nil, []string{"get"}, "want one HANDLE, got 0 arguments; see 'registryctl get --help'"},
		{"two handles", nil, []string{"inspect", "a", "b"}, "want one HANDLE, got 2 arguments"},
		{"hold without handles", nil, []string{"hold"}, "want one HANDLE or more"},
		{"bad output", nil, []string{"-w", "xml", "stats"}, `--output "xml": want table, json or yaml`},
		{"bad output in env", map[string]string{"REGISTRYCTL_OUTPUT": "xml"}, []string{"stats"}, `REGISTRYCTL_OUTPUT "xml"`},
		{"bad timeout in env", map[string]string{"REGISTRYCTL_TIMEOUT": "soon"}, []string{"stats"}, `REGISTRYCTL_TIMEOUT="soon"`},
		{"zero timeout", nil, []string{"--timeout", "0s", "stats"}, "--timeout must be positive"},
		{"token in clear off loopback", nil, []string{"--addr", "registry.example.org:7600", "--token", "s3cret", "stats"}, "--token would be sent in clear text"},
		{"cert without key", nil, []string{"--cert", "c.pem", "stats"}, "--cert and --key go together"},
		{"bad label", nil, []string{"ls", "--label", "team"}, `--label "team": want key=value`},
		{"bad state", nil, []string{"ls", "--state", "gone"}, `--state "gone": want pinned, lingering or weak`},
		{"negative limit", nil, []string{"ls", "--limit", "-1"}, "--limit must be 0 (all) or more"},
		{"kind with handles", nil, []string{"watch", "--kind", "PINNED", "obj_x"}, "--kind works only when watching all objects"},
		{"bad kind", nil, []string{"watch", "--kind", "EATEN"}, `--kind "EATEN"`},
		{"leases alone", nil, []string{"leases"}, "leases needs a subcommand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg, _ := runWith(tt.env, append([]string{"--addr", "127.0.0.1:1"}, tt.args...)...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d (usage); message %q", code, exitUsage, msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
		})
	}
}

func TestParseLabels(t *testing.T) {
	tests := []struct {
		in      []string
		want    map[string]string
		wantErr bool
	}{
		{nil, nil, false},
		{[]string{"a=b"}, map[string]string{"a": "b"}, false},
		{[]string{"a=b=c", "d="}, map[string]string{"a": "b=c", "d": ""}, false},
		{[]string{"a"}, nil, true},
		{[]string{"=b"}, nil, true},
	}
	for _, tt := range tests {
		got, err := parseLabels(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseLabels(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("parseLabels(%q) = %v, want %v", tt.in, got, tt.want)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("parseLabels(%q)[%q] = %q, want %q", tt.in, k, got[k], v)
			}
		}
	}
}
