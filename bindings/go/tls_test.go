package grpcfailover_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/internal/testenv"
)

// TLS and mTLS from Go (issue 17), with certificates made at test time.

func tlsServer(t *testing.T, certs, name string, extra ...string) *testenv.Server {
	args := append([]string{"--tls-cert", filepath.Join(certs, "server.pem"), "--tls-key", filepath.Join(certs, "server.key")}, extra...)
	return testenv.StartServer(t, name, args...)
}

func TestTLSAndMTLSCalls(t *testing.T) {
	certs := testenv.MakeCerts(t)
	ca := filepath.Join(certs, "ca.pem")
	s := tlsServer(t, certs, "secure")
	c := dial(t, "static:///"+s.Addr, grpcfailover.WithTLS(grpcfailover.TLSConfig{CAFile: ca}))
	if got := whoami(t, c); got != "secure" {
		t.Fatalf("Whoami over TLS = %q", got)
	}

	m := tlsServer(t, certs, "mtls", "--client-ca", ca)
	mtls := dial(t, "static:///"+m.Addr, grpcfailover.WithTLS(grpcfailover.TLSConfig{
		CAFile: ca, CertFile: filepath.Join(certs, "client.pem"), KeyFile: filepath.Join(certs, "client.key"),
	}))
	if got := whoami(t, mtls); got != "mtls" {
		t.Fatalf("Whoami over mTLS = %q", got)
	}

	unknown := dial(t, "static:///"+s.Addr, grpcfailover.WithTLS(grpcfailover.TLSConfig{CAFile: filepath.Join(certs, "other-ca.pem")}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := unknown.Invoke(ctx, "/test.Svc/Whoami", nil)
	if grpcfailover.CodeOf(err) != grpcfailover.Unavailable || !strings.Contains(err.Error(), "invalid peer certificate: UnknownIssuer") {
		t.Fatalf("unknown CA: %v", err)
	}
}

func TestTLSFileErrorsFailDial(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.pem")
	_, err := grpcfailover.Dial("static:///127.0.0.1:1", grpcfailover.WithTLS(grpcfailover.TLSConfig{CAFile: missing}))
	if grpcfailover.CodeOf(err) != grpcfailover.InvalidArgument || !strings.Contains(err.Error(), "tls.ca_file: cannot read "+missing) {
		t.Fatalf("missing ca_file: %v", err)
	}
}

func TestRegisterAndResolveThroughEtcdOverTLS(t *testing.T) {
	certs := testenv.MakeCerts(t)
	ca := filepath.Join(certs, "ca.pem")
	etcd := testenv.StartEtcdTLS(t, certs)
	s := tlsServer(t, certs, "secure")
	etcdTLS := grpcfailover.WithEtcdTLS(grpcfailover.TLSConfig{CAFile: ca})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, err := grpcfailover.Register(ctx, "service/tls", s.Addr, nil, 5*time.Second, grpcfailover.WithEtcd(etcd.Endpoint), etcdTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	c := dial(t, "etcd:///service/tls", grpcfailover.WithEtcd(etcd.Endpoint), etcdTLS,
		grpcfailover.WithTLS(grpcfailover.TLSConfig{CAFile: ca}))
	if got := whoami(t, c); got != "secure" {
		t.Fatalf("Whoami through etcd over TLS = %q", got)
	}
}
