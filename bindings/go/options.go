package grpcfailover

import (
	"encoding/json"
	"strings"
	"time"
)

// Option configures Dial and Register (Register uses only the etcd options). Options become the
// library's options_json; an option left out keeps the library's default.
type Option func(*dialOptions)

type dialOptions struct {
	values map[string]any
	etcd   map[string]any
}

func newDialOptions(opts []Option) *dialOptions {
	o := &dialOptions{values: map[string]any{}, etcd: map[string]any{}}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

func (o *dialOptions) json() (string, error) {
	v := make(map[string]any, len(o.values)+1)
	for k, x := range o.values {
		v[k] = x
	}
	if len(o.etcd) > 0 {
		v["etcd"] = o.etcd
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", newStatusError(InvalidArgument, "options: "+err.Error())
	}
	return string(b), nil
}

// millis rounds a duration up to whole milliseconds, so a positive duration never becomes 0
// (which the library reads as "none").
func millis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// WithEtcd sets the etcd endpoints ("host:port"; a comma-separated list is split) used to
// resolve etcd:/// targets and by Register. Default: 127.0.0.1:2379.
func WithEtcd(endpoints ...string) Option {
	return func(o *dialOptions) {
		var list []string
		for _, e := range endpoints {
			for _, part := range strings.Split(e, ",") {
				if part = strings.TrimSpace(part); part != "" {
					list = append(list, part)
				}
			}
		}
		o.etcd["endpoints"] = list
	}
}

// WithEtcdAuth logs in to etcd with a user name and password.
func WithEtcdAuth(username, password string) Option {
	return func(o *dialOptions) {
		o.etcd["username"] = username
		o.etcd["password"] = password
	}
}

// WithEtcdDialTimeout bounds how long connecting to etcd may take. Default: 3 s.
func WithEtcdDialTimeout(d time.Duration) Option {
	return func(o *dialOptions) { o.etcd["dial_timeout_ms"] = millis(d) }
}

// TLSConfig is TLS to the instances (WithTLS) or to etcd (WithEtcdTLS): the fields of the
// library's "tls" options. The zero value is TLS that trusts the system's roots. PEM files,
// read once by Dial or Register: a missing or invalid one fails it with InvalidArgument,
// naming the field and the path.
type TLSConfig struct {
	// CAFile holds the PEM certificates to trust; set alone, they replace the system's roots.
	CAFile string
	// CertFile and KeyFile, both set: the client certificate and key of mTLS (RSA, ECDSA or
	// Ed25519).
	CertFile, KeyFile string
	// ServerName is the name every server's certificate must cover (and the SNI sent),
	// instead of the host of the instance's address. An instance's etcd record may override
	// it with Metadata.server_name.
	ServerName string
	// UseSystemRoots trusts the system's roots as well as CAFile. (Without CAFile they are
	// trusted anyway.)
	UseSystemRoots bool
}

func (t TLSConfig) options() map[string]any {
	v := map[string]any{}
	for key, value := range map[string]string{
		"ca_file": t.CAFile, "cert_file": t.CertFile, "key_file": t.KeyFile, "server_name": t.ServerName,
	} {
		if value != "" {
			v[key] = value
		}
	}
	if t.UseSystemRoots {
		v["use_system_roots"] = true
	}
	return v
}

// WithTLS makes every connection to an instance TLS (HTTP/2 over TLS, ALPN h2). A handshake
// that fails (unknown CA, name mismatch, expired certificate, client certificate refused)
// makes that instance unavailable like a refused connection; calls nothing can serve fail
// with Unavailable and the reason.
func WithTLS(t TLSConfig) Option {
	return func(o *dialOptions) { o.values["tls"] = t.options() }
}

// WithEtcdTLS connects to etcd over TLS, for resolving etcd:/// targets and for Register.
// Endpoints are then "host:port" or "https://host:port".
func WithEtcdTLS(t TLSConfig) Option {
	return func(o *dialOptions) { o.etcd["tls"] = t.options() }
}

// WithServiceConfig sets the gRPC service config: the JSON that grpc-go takes in
// grpc.WithDefaultServiceConfig (loadBalancingConfig, methodConfig with retryPolicy or
// hedgingPolicy, retryThrottling, ...). An invalid config makes Dial fail with InvalidArgument.
func WithServiceConfig(serviceConfigJSON string) Option {
	return func(o *dialOptions) { o.values["service_config"] = serviceConfigJSON }
}

// WithConnectTimeout sets the least time one connection attempt gets (gRPC's
// MinConnectTimeout). Default: 20 s.
func WithConnectTimeout(d time.Duration) Option {
	return func(o *dialOptions) { o.values["connect_timeout_ms"] = millis(d) }
}

// ConnectBackoff is gRPC's connection backoff, as in grpc-go's backoff.Config. Zero fields keep
// the library's defaults (1 s, 1.6, 0.2, 120 s).
type ConnectBackoff struct {
	BaseDelay  time.Duration
	Multiplier float64
	Jitter     float64
	MaxDelay   time.Duration
}

// WithConnectBackoff sets how reconnection attempts to an instance back off.
func WithConnectBackoff(b ConnectBackoff) Option {
	return func(o *dialOptions) {
		v := map[string]any{}
		if b.BaseDelay > 0 {
			v["base_delay_ms"] = millis(b.BaseDelay)
		}
		if b.MaxDelay > 0 {
			v["max_delay_ms"] = millis(b.MaxDelay)
		}
		if b.Multiplier != 0 {
			v["multiplier"] = b.Multiplier
		}
		if b.Jitter != 0 {
			v["jitter"] = b.Jitter
		}
		o.values["connect_backoff"] = v
	}
}

// WithMaxAttempts caps maxAttempts of every retry and hedging policy (gRFC A6). Default: 5.
func WithMaxAttempts(n int) Option {
	return func(o *dialOptions) { o.values["max_attempts"] = n }
}

// WithMaxInFlightPerInstance makes the picker skip an instance that has n calls in flight.
// Default: unlimited.
func WithMaxInFlightPerInstance(n int) Option {
	return func(o *dialOptions) { o.values["max_in_flight_per_instance"] = n }
}

// WithMaxReceiveMessageBytes bounds the response messages a call accepts; a larger one ends the
// call with codes.ResourceExhausted before it is read. Default: 4 MiB, as in grpc-go
// (grpc.MaxCallRecvMsgSize). A method config's smaller maxResponseMessageBytes wins.
func WithMaxReceiveMessageBytes(n uint64) Option {
	return func(o *dialOptions) { o.values["max_receive_message_bytes"] = n }
}

// WithMaxSendMessageBytes bounds the request messages a call sends; a larger one fails with
// codes.ResourceExhausted before anything is sent. Default: unlimited, as in grpc-go. A method
// config's smaller maxRequestMessageBytes wins.
func WithMaxSendMessageBytes(n uint64) Option {
	return func(o *dialOptions) { o.values["max_send_message_bytes"] = n }
}

// WithCompression compresses every request of the client: "gzip" or "identity" (the default).
// A call's UseCompression overrides it; compressed responses are always accepted.
func WithCompression(name string) Option {
	return func(o *dialOptions) { o.values["compression"] = name }
}

// WithKeepalive turns on HTTP/2 keepalive pings every interval, closing a connection whose
// ping is not answered within timeout. Default: off.
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(o *dialOptions) {
		o.values["keepalive_time_ms"] = millis(interval)
		if timeout > 0 {
			o.values["keepalive_timeout_ms"] = millis(timeout)
		}
	}
}

// WithRawOption sets one top-level field of the library's options_json as is, for options this
// package has no function for yet. value is encoded with encoding/json.
func WithRawOption(key string, value any) Option {
	return func(o *dialOptions) { o.values[key] = value }
}

// CallOption configures one call of Client.Invoke.
type CallOption interface {
	apply(*callConfig)
}

type callConfig struct {
	metadata     []string // key, value, key, value, ...
	waitForReady int32    // -1: from the service config
	compression  string   // "": the client's
	header       *Metadata
	trailer      *Metadata
}

// plain reports whether the call needs none of the call options, so it can take the lighter
// gf_invoke_async path.
func (c *callConfig) plain() bool {
	return len(c.metadata) == 0 && c.waitForReady < 0 && c.header == nil && c.trailer == nil &&
		c.compression == ""
}

type callOptionFunc func(*callConfig)

func (f callOptionFunc) apply(c *callConfig) { f(c) }

// Metadata is gRPC metadata: lower-case keys, each with one or more values. Values of keys
// ending in "-bin" are raw bytes.
type Metadata map[string][]string

// WithMetadata sends request metadata with the call. Keys are lower-case ASCII (a-z 0-9 - _ .),
// not starting with "grpc-" and not an HTTP/1 connection header (connection, keep-alive,
// proxy-connection, transfer-encoding, upgrade, te); an invalid entry fails the call with
// InvalidArgument.
func WithMetadata(md Metadata) CallOption {
	return callOptionFunc(func(c *callConfig) {
		for k, vs := range md {
			for _, v := range vs {
				c.metadata = append(c.metadata, k, v)
			}
		}
	})
}

// WaitForReady overrides the method config's waitForReady: true waits for a ready instance until
// the context's deadline, false fails fast with Unavailable.
func WaitForReady(wait bool) CallOption {
	return callOptionFunc(func(c *callConfig) {
		c.waitForReady = 0
		if wait {
			c.waitForReady = 1
		}
	})
}

// UseCompression compresses this call's request: "gzip" or "identity" (grpc-go's
// grpc.UseCompressor names); "" keeps the client's choice, another name fails the call with
// InvalidArgument. Compressed responses are always accepted.
func UseCompression(name string) CallOption {
	return callOptionFunc(func(c *callConfig) { c.compression = name })
}

// Header stores the response headers in *md when the call ends.
func Header(md *Metadata) CallOption {
	return callOptionFunc(func(c *callConfig) { c.header = md })
}

// Trailer stores the response trailers (without grpc-status and grpc-message) in *md when the
// call ends.
func Trailer(md *Metadata) CallOption {
	return callOptionFunc(func(c *callConfig) { c.trailer = md })
}
