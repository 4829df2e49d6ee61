package deploy

import (
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/weakref/registry/internal/cluster"
)

// The compose profile "cluster": etcd and three registryd nodes of one
// cluster (docs/CLUSTER.md), with a key made once and shared, and
// registryctl inside the network.
const (
	profileCluster = "cluster"
	svcEtcd        = "etcd"
	svcKeygen      = "keygen"
	svcCtl         = "registryctl"
)

var clusterNodes = []string{"registryd-1", "registryd-2", "registryd-3"}

func loadCluster(t *testing.T) *types.Project {
	t.Helper()
	return loadProject(t, cli.WithProfiles([]string{profileCluster}))
}

func TestClusterProfileIsNotStartedByPlainUp(t *testing.T) {
	p := loadProject(t)
	for _, name := range append([]string{svcEtcd, svcKeygen, svcCtl}, clusterNodes...) {
		if _, ok := p.Services[name]; ok {
			t.Errorf("service %s runs on a plain 'docker compose up'; give it profiles: [%s]", name, profileCluster)
		}
		if _, ok := p.DisabledServices[name]; !ok {
			t.Errorf("docker-compose.yaml has no service %s in a profile", name)
		}
	}
}

// registrydFlags are the flags registryd defines, read from its source:
// every fs.XxxVar(&c.field, "name", ...) of cmd/registryd.
func registrydFlags(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "cmd", "registryd", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	def := regexp.MustCompile(`\bfs\.\w*Var\(&[\w.]+,\s*"([a-z0-9-]+)"`)
	flags := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range def.FindAllStringSubmatch(string(b), -1) {
			flags[m[1]] = true
		}
	}
	if !flags["addr"] || !flags["node"] || !flags["key-file"] {
		t.Fatalf("read %d flags from cmd/registryd, without --addr, --node or --key-file: the pattern no longer matches how flags are defined", len(flags))
	}
	// The cluster's flags, as issue 17 names them, while registryd's
	// membership is not yet merged; once it is, the source defines them.
	for _, f := range []string{"etcd-endpoints", "cluster", "advertise-addr", "etcd-ttl"} {
		flags[f] = true
	}
	return flags
}

// TestComposeRegistrydVariablesAreFlags: every REGISTRYD_ variable of
// every registryd service, in every profile, is the twin of a flag
// registryd defines (or REGISTRYD_KEY, the key itself): a misspelt one
// would be ignored, and the node would start without it.
func TestComposeRegistrydVariablesAreFlags(t *testing.T) {
	flags := registrydFlags(t)
	p := loadCluster(t)
	for name, s := range p.Services {
		for k := range s.Environment {
			flag, ok := strings.CutPrefix(k, "REGISTRYD_")
			if !ok || k == "REGISTRYD_KEY" {
				continue
			}
			if f := strings.ToLower(strings.ReplaceAll(flag, "_", "-")); !flags[f] {
				t.Errorf("service %s sets %s, but registryd has no flag --%s", name, k, f)
			}
		}
	}
}

// etcdFlags reads the --name=value flags of etcd's command.
func etcdFlags(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for _, arg := range s.Command {
		if k, v, ok := strings.Cut(strings.TrimPrefix(arg, "--"), "="); ok && strings.HasPrefix(arg, "--") {
			out[k] = v
		}
	}
	return out
}

func TestClusterProfile(t *testing.T) {
	p := loadCluster(t)
	etcd := service(t, p, svcEtcd)
	if err := pinned(etcd.Image, true); err != nil {
		t.Errorf("service etcd: %v", err)
	}
	if etcd.HealthCheck == nil || len(etcd.HealthCheck.Test) == 0 {
		t.Error("etcd has no healthcheck: the nodes would start before it answers")
	}
	ef := etcdFlags(etcd)
	advertised := strings.Split(ef["advertise-client-urls"], ",")
	listen, err := url.Parse(ef["listen-client-urls"])
	if err != nil || listen.Port() == "" {
		t.Fatalf("etcd --listen-client-urls %q: want a URL with a port", ef["listen-client-urls"])
	}

	var (
		tags    = map[string]string{} // tag -> service
		keys    = map[string]bool{}   // key file path and the volume it is in
		urls    = map[string]bool{}
		names   = map[string]bool{}
		keySrcs = map[string]bool{}
	)
	for _, name := range clusterNodes {
		s := service(t, p, name)
		get := func(k string) string {
			v, ok := env(s, k)
			if !ok || v == "" {
				t.Errorf("%s has no %s", name, k)
			}
			return v
		}
		tag := get("REGISTRYD_NODE")
		if n, err := strconv.ParseUint(tag, 10, 16); err != nil || n == 0 {
			t.Errorf("%s REGISTRYD_NODE=%q: want a node tag from 1 to 65535", name, tag)
		}
		if other, ok := tags[tag]; ok {
			t.Errorf("%s and %s both have node tag %s: the second would refuse to start", other, name, tag)
		}
		tags[tag] = name

		c := get("REGISTRYD_CLUSTER")
		if err := cluster.CheckName(c); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		names[c] = true

		ep := get("REGISTRYD_ETCD_ENDPOINTS")
		urls[ep] = true
		for _, e := range strings.Split(ep, ",") {
			u, err := url.Parse(e)
			if err != nil || u.Hostname() != svcEtcd || u.Port() != listen.Port() {
				t.Errorf("%s REGISTRYD_ETCD_ENDPOINTS %q: want http://%s:%s, where etcd listens", name, e, svcEtcd, listen.Port())
			}
			if !slices.Contains(advertised, e) {
				t.Errorf("%s REGISTRYD_ETCD_ENDPOINTS %q: etcd advertises %v", name, e, advertised)
			}
		}
		if _, ok := s.DependsOn[svcEtcd]; !ok {
			t.Errorf("%s does not depend_on etcd", name)
		}

		// Each node is reached by its service name, on the port it serves.
		adv, addr := get("REGISTRYD_ADVERTISE_ADDR"), get("REGISTRYD_ADDR")
		host, port, err := net.SplitHostPort(adv)
		_, servePort, _ := net.SplitHostPort(addr)
		if err != nil || host != name || port != servePort {
			t.Errorf("%s REGISTRYD_ADVERTISE_ADDR %q: want %s:%s, its service name and the port of REGISTRYD_ADDR %s", name, adv, name, servePort, addr)
		}
		if err := listensBeyondLoopback("REGISTRYD_ADDR", addr); err != nil {
			t.Errorf("%s: %v", name, err)
		}

		// One key for all: the same file, in the same volume.
		kf := get("REGISTRYD_KEY_FILE")
		keys[kf] = true
		found := false
		for _, v := range s.Volumes {
			if v.Target == path.Dir(kf) {
				found = true
				keySrcs[v.Source] = true
				if !v.ReadOnly {
					t.Errorf("%s mounts its key's volume %s writable; a node only reads it", name, v.Source)
				}
			}
		}
		if !found {
			t.Errorf("%s reads its key from %s, but mounts nothing at %s", name, kf, path.Dir(kf))
		}
		if _, ok := s.DependsOn[svcKeygen]; !ok {
			t.Errorf("%s does not depend_on keygen, which makes the key", name)
		}
	}
	if len(keys) != 1 || len(keySrcs) != 1 {
		t.Errorf("the nodes read keys %v from volumes %v: want one key for all, or their handles mean nothing to each other", keys, keySrcs)
	}
	if len(urls) != 1 || len(names) != 1 {
		t.Errorf("the nodes name etcd %v and cluster %v: want one of each", urls, names)
	}

	keygen := service(t, p, svcKeygen)
	if err := pinned(keygen.Image, true); err != nil {
		t.Errorf("service keygen: %v", err)
	}
	for src := range keySrcs {
		writes := false
		for _, v := range keygen.Volumes {
			writes = writes || v.Source == src && !v.ReadOnly
		}
		if !writes {
			t.Errorf("keygen does not mount the key's volume %s writable", src)
		}
	}
	for kf := range keys {
		if !strings.Contains(strings.Join(keygen.Command, " "), path.Base(kf)) {
			t.Errorf("keygen's command does not write %s", path.Base(kf))
		}
	}

	// registryctl in the network names the same cluster and etcd.
	ctl := service(t, p, svcCtl)
	target, _ := env(ctl, "REGISTRYCTL_CLUSTER")
	if name, err := cluster.NameOfTarget(target); err != nil || !names[name] {
		t.Errorf("registryctl REGISTRYCTL_CLUSTER %q: want the nodes' cluster %v as etcd:///registry/NAME (%v)", target, names, err)
	}
	if ep, _ := env(ctl, "REGISTRYCTL_ETCD_ENDPOINTS"); !urls[ep] {
		t.Errorf("registryctl REGISTRYCTL_ETCD_ENDPOINTS %q: the nodes use %v", ep, urls)
	}
}

// TestClusterPortsAreDocumented: the ports the profile publishes have
// rows in deploy/README.md's ports table, as the default stack's do.
func TestClusterPortsAreDocumented(t *testing.T) {
	p := loadCluster(t)
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range p.Services {
		for _, port := range s.Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("service %s publishes port %s on %q: publish on 127.0.0.1 only", name, port.Published, port.HostIP)
			}
			row := regexp.MustCompile(`(?m)^\|\s*` + "`?" + regexp.QuoteMeta(port.Published) + "`?" + `\s*\|`)
			if !row.Match(b) {
				t.Errorf("service %s publishes port %s, which deploy/README.md's ports table does not list", name, port.Published)
			}
		}
	}
}
