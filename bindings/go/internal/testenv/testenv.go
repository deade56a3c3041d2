// Package testenv starts what the tests of the Go binding talk to: gf-testserver processes and
// single-node etcd clusters on free loopback ports, with temporary data directories. Each is
// stopped by PID when the test ends.
package testenv

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RepoRoot is the root of the grpc-failover checkout.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
}

// TestserverPath is $GF_TESTSERVER, or target/release/gf-testserver of the checkout.
func TestserverPath() string {
	if p := os.Getenv("GF_TESTSERVER"); p != "" {
		return p
	}
	return filepath.Join(RepoRoot(), "target", "release", "gf-testserver")
}

// Server is a gf-testserver process.
type Server struct {
	Addr string
	Name string
	args []string
	cmd  *exec.Cmd
}

// StartServer runs gf-testserver --name name --listen 127.0.0.1:0 args... and waits for its
// address. The server is killed when the test ends.
func StartServer(t testing.TB, name string, args ...string) *Server {
	t.Helper()
	s := &Server{Name: name, args: args}
	if err := s.start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

func (s *Server) start(listen string) error {
	cmd := exec.Command(TestserverPath(), append([]string{"--name", s.Name, "--listen", listen}, s.args...)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start gf-testserver (run make build): %w", err)
	}
	lines := bufio.NewReader(out)
	first, err := lines.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(first), "listening ")
	if err != nil || !ok {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("gf-testserver printed %q (%v), want \"listening <addr>\"", first, err)
	}
	// Keep draining stdout so the server never blocks on a full pipe.
	go func() { _, _ = io.Copy(io.Discard, lines) }()
	s.Addr, s.cmd = addr, cmd
	return nil
}

// Kill stops the server with SIGKILL: it dies without deregistering.
func (s *Server) Kill() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Terminate stops the server with SIGTERM and waits: it deregisters first.
func (s *Server) Terminate() {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

var (
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// FreePort is a loopback TCP port nothing listens on now, for a process started next (etcd).
// It is picked below Linux's ephemeral range (32768 and up), where the kernel never hands out
// ports by itself, so a gf-testserver binding port 0 cannot take it first; never the same port
// twice in one test process.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 10000 {
		port := 20000 + rand.IntN(12000)
		if handedOut[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		handedOut[port] = true
		return port
	}
	t.Fatal("no free loopback port in 20000..32000")
	return 0
}

// Etcd is a single-node etcd cluster.
type Etcd struct {
	// Endpoint is "127.0.0.1:PORT".
	Endpoint string
	cmd      *exec.Cmd
	ctlTLS   []string
}

// MakeCerts makes test certificates with scripts/test-certs.sh in a temporary directory and
// returns it: ca.pem, server.pem/.key (localhost, 127.0.0.1), client.pem/.key, other-ca.pem.
func MakeCerts(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("bash", filepath.Join(RepoRoot(), "scripts", "test-certs.sh"), dir).CombinedOutput()
	if err != nil {
		t.Fatalf("test-certs.sh: %v: %s", err, out)
	}
	return dir
}

// StartEtcd starts etcd on free loopback ports with a temporary data directory, waits until it
// is healthy and stops it when the test ends.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	return startEtcd(t, "")
}

// StartEtcdTLS is StartEtcd serving clients over TLS with the server certificate in certs (a
// MakeCerts directory).
func StartEtcdTLS(t testing.TB, certs string) *Etcd {
	t.Helper()
	return startEtcd(t, certs)
}

func startEtcd(t testing.TB, certs string) *Etcd {
	t.Helper()
	dir := t.TempDir()
	scheme := "http://"
	var tlsFlags, ctlTLS []string
	if certs != "" {
		scheme = "https://"
		tlsFlags = []string{"--cert-file", filepath.Join(certs, "server.pem"), "--key-file", filepath.Join(certs, "server.key")}
		ctlTLS = []string{"--cacert", filepath.Join(certs, "ca.pem")}
	}
	client := scheme + "127.0.0.1:" + strconv.Itoa(FreePort(t))
	peer := "http://127.0.0.1:" + strconv.Itoa(FreePort(t))
	log, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("etcd", "--name", "n", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "n="+peer, "--heartbeat-interval", "50", "--election-timeout", "500")
	cmd.Args = append(cmd.Args, tlsFlags...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcd (is etcd-server installed? run make deps): %v", err)
	}
	e := &Etcd{Endpoint: strings.TrimPrefix(client, scheme), cmd: cmd, ctlTLS: ctlTLS}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log.Close()
	})
	if !Eventually(30*time.Second, func() bool { _, err := e.Ctl("endpoint", "health"); return err == nil }) {
		logText, _ := os.ReadFile(log.Name())
		t.Fatalf("etcd on %s did not become healthy:\n%s", e.Endpoint, logText)
	}
	return e
}

// Ctl runs etcdctl against this etcd and returns its standard output.
func (e *Etcd) Ctl(args ...string) (string, error) {
	flags := append([]string{"--endpoints", e.Endpoint, "--dial-timeout", "2s", "--command-timeout", "3s"}, e.ctlTLS...)
	cmd := exec.Command("etcdctl", append(flags, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", fmt.Errorf("etcdctl %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", err
	}
	return string(out), nil
}

// Get returns the value of key, and whether it exists.
func (e *Etcd) Get(t testing.TB, key string) (string, bool) {
	t.Helper()
	out, err := e.Ctl("get", "--print-value-only", key)
	if err != nil {
		t.Fatal(err)
	}
	out = strings.TrimSuffix(out, "\n")
	return out, out != ""
}

// Put sets key to value.
func (e *Etcd) Put(t testing.TB, key, value string) {
	t.Helper()
	if _, err := e.Ctl("put", key, value); err != nil {
		t.Fatal(err)
	}
}

// Eventually polls cond every 20 ms until it holds or timeout passes; it returns whether it held.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
