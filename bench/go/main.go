// Command gobench compares the Go binding of grpc-failover with the reference setup written with
// grpc-go itself (grpc.NewClient with etcd's naming resolver and the reference failover service
// config, round_robin) against the same three gf-testservers, which register themselves in one
// etcd. Both clients send 100-byte requests to /UserService/Echo as raw bytes, each call with a
// 1 s deadline.
//
// Throughput rows: calls/s and p99 at concurrency 1 and 32, the two clients taking turns, best of
// -repeat runs each (the machine may be shared). Kill row: 32 callers for 5 s; at 2 s one instance
// is SIGKILLed (it stays registered: its lease outlives the run), at 3.5 s it is started again on
// the same address. The errors each caller sees are counted, and both runs are written per 100 ms
// bin to failover_timeline.csv.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	grpcfailover "grpc-failover/bindings/go"
)

const (
	prefix = "service/user"
	method = "/UserService/Echo"
	// The reference failover service config, used by both clients.
	serviceConfig = `{"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [{"name": [{"service": "UserService"}], "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.1s", "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`
	callTimeout   = time.Second
	ours          = "grpc-failover"
	reference     = "grpc-go"
)

var (
	testserver = flag.String("testserver", "", "path of gf-testserver (default: target/release of this checkout)")
	outDir     = flag.String("out", "", "directory for go.md and failover_timeline.csv (default: bench/results/parts)")
	seconds    = flag.Float64("seconds", 3, "seconds per throughput run")
	warmup     = flag.Duration("warmup", 500*time.Millisecond, "warm-up before each throughput run")
	repeat     = flag.Int("repeat", 2, "throughput runs per client and row; the best counts")
	killAt     = flag.Duration("kill-at", 2*time.Second, "when the kill run SIGKILLs an instance")
	restartAt  = flag.Duration("restart-at", 3500*time.Millisecond, "when the kill run restarts it (0: never)")
	killFor    = flag.Duration("kill-run", 5*time.Second, "length of the kill run")
)

// caller is one of the two clients under test.
type caller interface {
	call(ctx context.Context, req []byte) error
	Close() error
}

type oursCaller struct{ c *grpcfailover.Client }

func dialOurs(etcd string) (caller, error) {
	c, err := grpcfailover.Dial("etcd:///"+prefix, grpcfailover.WithEtcd(etcd), grpcfailover.WithServiceConfig(serviceConfig))
	return oursCaller{c}, err
}

func (o oursCaller) call(ctx context.Context, req []byte) error {
	_, err := o.c.Invoke(ctx, method, req)
	return err
}

func (o oursCaller) Close() error { return o.c.Close() }

// rawCodec hands []byte messages to grpc-go unchanged.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "raw" }

type grpcCaller struct {
	conn *grpc.ClientConn
	etcd *clientv3.Client
}

func dialGRPC(etcd string) (caller, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 3 * time.Second})
	if err != nil {
		return nil, err
	}
	builder, err := resolver.NewBuilder(cli)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("etcd:///"+prefix, grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
		// grpc-go's default :authority for this target is "service%2Fuser", which gf-testserver's
		// HTTP/2 stack rejects with PROTOCOL_ERROR; the authority is not used otherwise.
		grpc.WithAuthority("localhost"))
	if err != nil {
		return nil, err
	}
	return grpcCaller{conn, cli}, nil
}

func (g grpcCaller) call(ctx context.Context, req []byte) error {
	var reply []byte
	return g.conn.Invoke(ctx, method, req, &reply)
}

func (g grpcCaller) Close() error {
	_ = g.conn.Close()
	return g.etcd.Close()
}

var dialers = []struct {
	name string
	dial func(etcd string) (caller, error)
}{{ours, dialOurs}, {reference, dialGRPC}}

// callOnce makes one call with the per-call deadline.
func callOnce(c caller, req []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return c.call(ctx, req)
}

type throughput struct {
	rate   float64
	p99    time.Duration
	errors int
}

// measure runs conc callers for d after a warm-up and returns calls/s and the p99 latency.
func measure(c caller, conc int, d time.Duration) throughput {
	req := make([]byte, 100)
	warmEnd := time.Now().Add(*warmup)
	var wg sync.WaitGroup
	lat := make([][]time.Duration, conc)
	errs := make([]int, conc)
	start := make(chan struct{})
	var end time.Time
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for time.Now().Before(warmEnd) {
				_ = callOnce(c, req)
			}
			<-start
			l := make([]time.Duration, 0, 1<<14)
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				if err := callOnce(c, req); err != nil {
					errs[w]++
				}
				l = append(l, time.Since(t0))
			}
			lat[w] = l
		}(w)
	}
	time.Sleep(time.Until(warmEnd))
	runtime.GC()
	began := time.Now()
	end = began.Add(d)
	close(start)
	wg.Wait()
	elapsed := time.Since(began)
	var all []time.Duration
	var r throughput
	for w := range lat {
		all = append(all, lat[w]...)
		r.errors += errs[w]
	}
	slices.Sort(all)
	r.rate = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		r.p99 = all[min(len(all)-1, len(all)*99/100)]
	}
	return r
}

// killResult is one client's kill run: outcomes per 100 ms bin and errors by code.
type killResult struct {
	calls, errors []int
	byCode        map[string]int
}

func killRun(c caller, servers []*server) killResult {
	const conc = 32
	bins := int(*killFor / (100 * time.Millisecond))
	req := make([]byte, 100)
	var mu sync.Mutex
	r := killResult{calls: make([]int, bins), errors: make([]int, bins), byCode: map[string]int{}}
	began := time.Now()
	end := began.Add(*killFor)
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			calls, errs := make([]int, bins), make([]int, bins)
			codes := map[string]int{}
			for time.Now().Before(end) {
				err := callOnce(c, req)
				bin := min(int(time.Since(began)/(100*time.Millisecond)), bins-1)
				if err == nil {
					calls[bin]++
					continue
				}
				errs[bin]++
				codes[codeOf(err)]++
			}
			mu.Lock()
			defer mu.Unlock()
			for i := range calls {
				r.calls[i] += calls[i]
				r.errors[i] += errs[i]
			}
			for k, v := range codes {
				r.byCode[k] += v
			}
		}()
	}
	victim := servers[0]
	time.Sleep(time.Until(began.Add(*killAt)))
	victim.kill()
	if *restartAt > 0 {
		time.Sleep(time.Until(began.Add(*restartAt)))
		if err := victim.start(); err != nil {
			log.Fatalf("restart %s: %v", victim.name, err)
		}
	}
	wg.Wait()
	return r
}

// codeOf names the gRPC code of an error of either client.
func codeOf(err error) string {
	var se *grpcfailover.StatusError
	if errors.As(err, &se) {
		return se.Code().String()
	}
	return status.Code(err).String()
}

// waitReady calls until 30 calls in a row succeed, so that both clients start measuring with
// their instances resolved and connected.
func waitReady(c caller) error {
	deadline := time.Now().Add(15 * time.Second)
	ok := 0
	for time.Now().Before(deadline) {
		if err := callOnce(c, []byte("warm")); err == nil {
			ok++
			if ok >= 30 {
				return nil
			}
			continue
		}
		ok = 0
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no successful calls within 15 s")
}

// server is a gf-testserver process that registers itself in etcd.
type server struct {
	name, addr, etcd string
	cmd              *exec.Cmd
}

func (s *server) start() error {
	listen := s.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	var last error
	// After a SIGKILL the port may stay busy for a moment.
	for attempt := 0; attempt < 50; attempt++ {
		cmd := exec.Command(*testserver, "--name", s.name, "--listen", listen,
			"--etcd", s.etcd, "--prefix", prefix, "--weight", "1", "--ttl", "10")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		lines := bufio.NewReader(out)
		first, err := lines.ReadString('\n')
		if addr, ok := strings.CutPrefix(strings.TrimSpace(first), "listening "); err == nil && ok {
			go func() { _, _ = io.Copy(io.Discard, lines) }()
			s.addr, s.cmd = addr, cmd
			return nil
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		last = fmt.Errorf("gf-testserver printed %q (%v)", first, err)
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

func (s *server) kill() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd runs a single-node etcd on free loopback ports in dir.
func startEtcd(dir string) (*exec.Cmd, string, error) {
	client := "http://127.0.0.1:" + strconv.Itoa(freePort())
	peer := "http://127.0.0.1:" + strconv.Itoa(freePort())
	cmd := exec.Command("etcd", "--name", "n", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "n="+peer)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start etcd: %w", err)
	}
	endpoint := strings.TrimPrefix(client, "http://")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		return cmd, "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, err := cli.Get(ctx, "health"); err == nil {
			return cmd, endpoint, nil
		} else if ctx.Err() != nil {
			return cmd, "", fmt.Errorf("etcd did not become healthy: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitRegistered(endpoint string, n int) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count == int64(n) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%d instances registered, want %d", resp.Count, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func thousands(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
}

func codesText(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%d %s", v, k))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func grpcVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "google.golang.org/grpc" {
				return d.Version
			}
		}
	}
	return "?"
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("gobench: ")
	flag.Parse()
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..")
	if *testserver == "" {
		*testserver = filepath.Join(root, "target", "release", "gf-testserver")
	}
	if *outDir == "" {
		*outDir = filepath.Join(root, "bench", "results", "parts")
	}

	dir, err := os.MkdirTemp("", "gobench-etcd-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	etcdCmd, etcd, err := startEtcd(dir)
	if etcdCmd != nil {
		defer func() { _ = etcdCmd.Process.Kill(); _ = etcdCmd.Wait() }()
	}
	if err != nil {
		log.Fatal(err)
	}
	var servers []*server
	defer func() {
		for _, s := range servers {
			s.kill()
		}
	}()
	for i := 1; i <= 3; i++ {
		s := &server{name: "user-" + strconv.Itoa(i), etcd: etcd}
		if err := s.start(); err != nil {
			log.Fatal(err)
		}
		servers = append(servers, s)
	}
	if err := waitRegistered(etcd, 3); err != nil {
		log.Fatal(err)
	}

	run := time.Duration(*seconds * float64(time.Second))
	type row struct {
		conc int
		best map[string]throughput
	}
	var rows []row
	for _, conc := range []int{1, 32} {
		r := row{conc: conc, best: map[string]throughput{}}
		for i := 0; i < *repeat; i++ {
			for _, d := range dialers {
				c, err := d.dial(etcd)
				if err != nil {
					log.Fatalf("%s: %v", d.name, err)
				}
				if err := waitReady(c); err != nil {
					log.Fatalf("%s: %v", d.name, err)
				}
				t := measure(c, conc, run)
				_ = c.Close()
				log.Printf("concurrency %d, %s, run %d: %s calls/s, p99 %s, %d errors", conc, d.name, i+1, thousands(t.rate), ms(t.p99), t.errors)
				if t.rate > r.best[d.name].rate {
					r.best[d.name] = t
				}
			}
		}
		rows = append(rows, r)
	}

	kills := map[string]killResult{}
	for _, d := range dialers {
		if err := waitRegistered(etcd, 3); err != nil {
			log.Fatal(err)
		}
		c, err := d.dial(etcd)
		if err != nil {
			log.Fatalf("%s: %v", d.name, err)
		}
		if err := waitReady(c); err != nil {
			log.Fatalf("%s: %v", d.name, err)
		}
		kills[d.name] = killRun(c, servers)
		_ = c.Close()
		k := kills[d.name]
		log.Printf("kill run, %s: %d calls, %d errors (%s)", d.name, sum(k.calls), sum(k.errors), codesText(k.byCode))
	}

	var md strings.Builder
	fmt.Fprintf(&md, "## Go binding vs grpc-go reference setup\n\n")
	fmt.Fprintf(&md, "%d cores, %s; grpcfailover %s (Go %s, cgo) vs grpc-go %s with etcd's naming resolver; "+
		"both with the reference failover service config (round_robin, retryPolicy maxAttempts 4 on UNAVAILABLE), "+
		"resolving `etcd:///%s` where three gf-testservers registered themselves; 100-byte requests to `%s`, "+
		"raw bytes both sides, a %s deadline per call; best of %d runs of %.0f s per side and row, each after %s of warm-up. "+
		"grpc-go also sets `grpc.WithAuthority(\"localhost\")`: gf-testserver rejects its default `:authority` for this target (`service%%2Fuser`) with PROTOCOL_ERROR.\n\n",
		runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"), grpcfailover.Version(), runtime.Version(), grpcVersion(),
		prefix, method, callTimeout, *repeat, *seconds, *warmup)
	fmt.Fprintf(&md, "| scenario | ours calls/s | ours p99 | grpc-go calls/s | grpc-go p99 | ratio |\n")
	fmt.Fprintf(&md, "| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		o, g := r.best[ours], r.best[reference]
		fmt.Fprintf(&md, "| concurrency %d | %s | %s | %s | %s | %.2fx |\n", r.conc, thousands(o.rate), ms(o.p99), thousands(g.rate), ms(g.p99), o.rate/g.rate)
	}
	restart := "left dead"
	if *restartAt > 0 {
		restart = fmt.Sprintf("restarted on the same address at %.1f s", restartAt.Seconds())
	}
	fmt.Fprintf(&md, "\nInstance kill: 32 callers for %.0f s; one of the three instances is SIGKILLed at %.1f s (its etcd record stays: the lease outlives the run) and %s. "+
		"Per-100 ms counts are in `failover_timeline.csv`.\n\n", killFor.Seconds(), killAt.Seconds(), restart)
	fmt.Fprintf(&md, "| client | successful calls | caller-visible errors | errors by code |\n| --- | ---: | ---: | --- |\n")
	for _, d := range dialers {
		k := kills[d.name]
		fmt.Fprintf(&md, "| %s | %s | %d | %s |\n", d.name, thousands(float64(sum(k.calls))), sum(k.errors), codesText(k.byCode))
	}
	minRatio := 0.0
	for i, r := range rows {
		if ratio := r.best[ours].rate / r.best[reference].rate; i == 0 || ratio < minRatio {
			minRatio = ratio
		}
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "not met"
	}
	fmt.Fprintf(&md, "\nTargets: throughput >= 1.0x grpc-go in every row: %s (lowest %.2fx); no more caller-visible errors than grpc-go through the kill: %s.\n",
		verdict(minRatio >= 1.0), minRatio, verdict(sum(kills[ours].errors) <= sum(kills[reference].errors)))
	fmt.Print("\n" + md.String())

	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*outDir, "go.md"), []byte(md.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	var csv strings.Builder
	csv.WriteString("client,t_ms,calls,errors\n")
	for _, d := range dialers {
		k := kills[d.name]
		for i := range k.calls {
			fmt.Fprintf(&csv, "%s,%d,%d,%d\n", d.name, i*100, k.calls[i], k.errors[i])
		}
	}
	if err := os.WriteFile(filepath.Join(*outDir, "failover_timeline.csv"), []byte(csv.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}
