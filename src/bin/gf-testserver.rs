//! gf-testserver: the fault-injecting gRPC backend used by the tests, the demo and the
//! benchmarks of every language. Serves raw bytes on any service name:
//!
//! - `/<any.Service>/Echo` returns the request; `/<any.Service>/Whoami` returns `--name`;
//!   any other method is UNIMPLEMENTED.
//! - `/<any.Service>/Zeros` with a decimal N as the request returns N MiB of zero bytes (with
//!   --compress: a gzip "bomb" of a few KiB per MiB on the wire).
//! - request metadata whose key starts with `x-echo-` comes back in the response trailers, and
//!   so do `grpc-previous-rpc-attempts`, as `x-gf-previous-rpc-attempts`, and `grpc-encoding`
//!   (how the request came compressed), as `x-gf-request-encoding`.
//! - requests compressed with gzip are accepted; --compress compresses the replies with gzip
//!   when the client accepts it.
//! - `grpc.health.v1.Health/Check` and `/Watch` (protobuf), for "" and any service name;
//!   `/gf.test.Control/SetServing` with body `SERVING` or `NOT_SERVING` flips the status.
//!
//! Flags: --listen 127.0.0.1:PORT (0 = pick; prints `listening <addr>` first), --ports N (listen
//! on N ports of that host, one `listening` line each: PORT..PORT+N-1, or N picked ports for
//! port 0; the scale benchmark's thousands of instances in a few processes; --etcd registers
//! the first), --name,
//! --fail-rate F, --fail-code C, --delay-ms N, --pushback-ms N, --no-health (no health
//! service: UNIMPLEMENTED), --fail-after-headers (injected failures come after the response
//! headers, so the call is committed), --die-after-headers (the process exits after sending the
//! first call's response headers: a connection lost mid-response), and --etcd ENDPOINTS
//! --prefix P --weight W --ttl S to register itself. --tls-cert FILE --tls-key FILE serve TLS
//! (ALPN h2; RSA, ECDSA or Ed25519 keys, PEM); --client-ca FILE also requires a client
//! certificate issued by that CA (mTLS). Without them it serves plaintext HTTP/2.
//!
//! SIGTERM (or Ctrl-C) drains gracefully, as a server being restarted does: it stops accepting,
//! deregisters from etcd, reports NOT_SERVING to health watchers (and ends their streams), sends
//! GOAWAY on every connection, lets the calls in flight finish (at most 10 s) and exits 0.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{self, Stream, StreamExt};
use grpc_failover::config::EtcdOptions;
use grpc_failover::RawCodec;
use grpc_failover::Registration;
use http::HeaderMap;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};

#[derive(Clone, Debug)]
struct Config {
    listen: String,
    ports: u16,
    name: String,
    fail_rate: f64,
    fail_code: i32,
    delay: Duration,
    pushback_ms: Option<i64>,
    etcd: Option<String>,
    prefix: String,
    weight: f64,
    ttl: u32,
    health: bool,
    fail_after_headers: bool,
    die_after_headers: bool,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    client_ca: Option<String>,
    compress: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("gf-testserver: {msg}");
    eprintln!(
        "usage: gf-testserver [--listen 127.0.0.1:PORT [--ports N]] [--name NAME] [--fail-rate F] [--fail-code C] \
         [--delay-ms N] [--pushback-ms N] [--no-health] [--compress] [--fail-after-headers] [--die-after-headers] [--etcd ENDPOINTS --prefix P [--weight W] [--ttl S]] \
         [--tls-cert FILE --tls-key FILE [--client-ca FILE]]"
    );
    std::process::exit(2)
}

fn parse_args() -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".into(),
        ports: 1,
        name: "gf-testserver".into(),
        fail_rate: 0.0,
        fail_code: Code::Unavailable as i32,
        delay: Duration::ZERO,
        pushback_ms: None,
        etcd: None,
        prefix: String::new(),
        weight: 1.0,
        ttl: 5,
        health: true,
        fail_after_headers: false,
        die_after_headers: false,
        tls_cert: None,
        tls_key: None,
        client_ca: None,
        compress: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> T {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: bad value {v:?}")))
        }
        match flag.as_str() {
            "--listen" => c.listen = value(),
            "--ports" => c.ports = num(&flag, value()),
            "--name" => c.name = value(),
            "--fail-rate" => c.fail_rate = num(&flag, value()),
            "--fail-code" => c.fail_code = num(&flag, value()),
            "--delay-ms" => c.delay = Duration::from_millis(num(&flag, value())),
            "--pushback-ms" => c.pushback_ms = Some(num(&flag, value())),
            "--etcd" => c.etcd = Some(value()),
            "--prefix" => c.prefix = value(),
            "--weight" => c.weight = num(&flag, value()),
            "--ttl" => c.ttl = num(&flag, value()),
            "--no-health" => c.health = false,
            "--compress" => c.compress = true,
            "--fail-after-headers" => c.fail_after_headers = true,
            "--die-after-headers" => c.die_after_headers = true,
            "--tls-cert" => c.tls_cert = Some(value()),
            "--tls-key" => c.tls_key = Some(value()),
            "--client-ca" => c.client_ca = Some(value()),
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if !(0.0..=1.0).contains(&c.fail_rate) {
        usage("--fail-rate must be in 0..1");
    }
    if !(1..=16).contains(&c.fail_code) {
        usage("--fail-code must be 1..16");
    }
    if c.etcd.is_some() && c.prefix.is_empty() {
        usage("--etcd needs --prefix");
    }
    if c.tls_cert.is_some() != c.tls_key.is_some() {
        usage("--tls-cert and --tls-key go together");
    }
    if c.client_ca.is_some() && c.tls_cert.is_none() {
        usage("--client-ca needs --tls-cert and --tls-key");
    }
    c
}

/// Health status values of grpc.health.v1.HealthCheckResponse.ServingStatus.
const SERVING: u8 = 1;
const NOT_SERVING: u8 = 2;

struct Server {
    cfg: Config,
    serving: tokio::sync::watch::Sender<u8>,
    /// Becomes true when the server starts draining.
    draining: tokio::sync::watch::Sender<bool>,
}

/// How long a drain waits for the calls in flight before the process exits anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

fn main() {
    let cfg = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(cfg));
}

async fn run(cfg: Config) {
    let listeners = bind(&cfg).await;
    let addr = listeners[0].local_addr().expect("bound address");
    for l in &listeners {
        println!("listening {}", l.local_addr().expect("bound address"));
    }
    let _ = std::io::stdout().flush();

    let registration = match &cfg.etcd {
        Some(endpoints) => {
            let opts = EtcdOptions {
                endpoints: endpoints.split(',').map(|s| s.trim().to_string()).collect(),
                ..EtcdOptions::default()
            };
            let metadata = serde_json::json!({ "weight": cfg.weight });
            match Registration::register(&opts, &cfg.prefix, &addr.to_string(), metadata, cfg.ttl)
                .await
            {
                Ok(r) => {
                    println!("registered {}", r.key());
                    let _ = std::io::stdout().flush();
                    Some(r)
                }
                Err(e) => {
                    eprintln!("gf-testserver: cannot register: {e}");
                    std::process::exit(1);
                }
            }
        }
        None => None,
    };

    let tls = cfg.tls_cert.as_ref().map(|_| {
        tls_acceptor(&cfg).unwrap_or_else(|e| {
            eprintln!("gf-testserver: {e}");
            std::process::exit(2)
        })
    });
    let (serving, _) = tokio::sync::watch::channel(SERVING);
    let (draining, _) = tokio::sync::watch::channel(false);
    let server = Arc::new(Server {
        cfg,
        serving,
        draining,
    });
    // Every connection task holds a clone; recv() returns None once all of them have ended.
    let (conn_alive, mut conns_done) = tokio::sync::mpsc::channel::<()>(1);
    // With --ports, one accepting task per port, all feeding the loop below; one port is
    // accepted in that loop itself (no hop: a refused TLS client sees the server's alert before
    // the connection closes, which the TLS tests read).
    let mut listeners = listeners;
    let single = (listeners.len() == 1).then(|| listeners.remove(0));
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(64);
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let accepted = accepted_tx.clone();
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            if accepted.send(stream).await.is_err() {
                                return;
                            }
                        }
                        // Out of file descriptors, say: do not spin on it.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            })
        })
        .collect();
    drop(accepted_tx);
    let accept = async {
        loop {
            let stream: tokio::net::TcpStream = match &single {
                Some(listener) => match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                None => match accepted.recv().await {
                    Some(stream) => stream,
                    None => return,
                },
            };
            let _ = stream.set_nodelay(true);
            let server = server.clone();
            let alive = conn_alive.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve(stream, server).await,
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                            Ok(Ok(stream)) => serve(stream, server).await,
                            Ok(Err(e)) => {
                                eprintln!("gf-testserver {}: tls handshake: {e}", server.cfg.name)
                            }
                            Err(_) => eprintln!(
                                "gf-testserver {}: tls handshake: no ClientHello within 10 s",
                                server.cfg.name
                            ),
                        }
                    }
                }
                drop(alive);
            });
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = accept => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // The drain, in the order a graceful restart needs: no new connections, out of the
    // registry, NOT_SERVING for the health watchers, then GOAWAY and the calls in flight.
    drop(single);
    for a in &acceptors {
        a.abort();
    }
    if let Some(r) = registration {
        if let Err(e) = r.deregister().await {
            eprintln!("gf-testserver: deregister: {e}");
        }
    }
    server
        .serving
        .send_if_modified(|s| std::mem::replace(s, NOT_SERVING) != NOT_SERVING);
    server.draining.send_replace(true);
    drop(conn_alive);
    if tokio::time::timeout(DRAIN_LIMIT, conns_done.recv())
        .await
        .is_err()
    {
        eprintln!(
            "gf-testserver {}: calls still in flight after {} s of draining",
            server.cfg.name,
            DRAIN_LIMIT.as_secs()
        );
    }
    std::process::exit(0);
}

/// Binds `--listen`, and with `--ports N` the N-1 ports after it (or N-1 more picked ports).
async fn bind(cfg: &Config) -> Vec<tokio::net::TcpListener> {
    let first: std::net::SocketAddr = cfg
        .listen
        .parse()
        .unwrap_or_else(|e| usage(&format!("--listen {}: {e}", cfg.listen)));
    let mut out = Vec::with_capacity(cfg.ports.max(1) as usize);
    for i in 0..cfg.ports.max(1) {
        let mut at = first;
        if first.port() != 0 {
            let port = first.port().checked_add(i);
            at.set_port(port.unwrap_or_else(|| usage("--ports: past port 65535")));
        }
        match tokio::net::TcpListener::bind(at).await {
            Ok(l) => out.push(l),
            Err(e) => usage(&format!("cannot listen on {at}: {e}")),
        }
    }
    out
}

/// Serves HTTP/2 on one connection until it ends or, once the server drains, until its calls
/// are done after a GOAWAY.
async fn serve<T>(io: T, server: Arc<Server>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut drain = server.draining.subscribe();
    let svc_server = server.clone();
    let svc = hyper::service::service_fn(move |req| {
        let server = svc_server.clone();
        async move { Ok::<_, Infallible>(server.handle(req).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(None)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let drained = async {
        let _ = drain.wait_for(|d| *d).await;
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = drained => {
            // GOAWAY: the client opens no new streams here, the open ones finish.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The TLS side of `--tls-cert`/`--tls-key`/`--client-ca`.
fn tls_acceptor(cfg: &Config) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = cfg.tls_cert.as_deref().expect("checked by the caller");
    let key_path = cfg.tls_key.as_deref().expect("checked with --tls-cert");
    let certs = |path: &str| {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{path}: {e}"))
    };
    let chain = certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| format!("{key_path}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs(ca_path)? {
                roots.add(cert).map_err(|e| format!("{ca_path}: {e}"))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("{ca_path}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{cert_path}, {key_path}: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl Server {
    async fn handle(
        self: Arc<Self>,
        req: http::Request<Incoming>,
    ) -> http::Response<tonic::body::Body> {
        let path = req.uri().path().to_string();
        let mut grpc = tonic::server::Grpc::new(RawCodec)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        if self.cfg.compress {
            grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        match path.as_str() {
            p if p.starts_with("/grpc.health.v1.Health/") && !self.cfg.health => {
                tonic::Status::unimplemented("gf-testserver: started with --no-health").into_http()
            }
            "/grpc.health.v1.Health/Check" => {
                let me = self.clone();
                grpc.unary(
                    Handler(move |r: Request<Bytes>| me.clone().health_check(r)),
                    req,
                )
                .await
            }
            "/grpc.health.v1.Health/Watch" => {
                let me = self.clone();
                grpc.server_streaming(
                    Handler(move |r: Request<Bytes>| me.clone().health_watch(r)),
                    req,
                )
                .await
            }
            "/gf.test.Control/SetServing" => {
                let me = self.clone();
                grpc.unary(
                    Handler(move |r: Request<Bytes>| me.clone().set_serving(r)),
                    req,
                )
                .await
            }
            _ => {
                let method = path.rsplit('/').next().unwrap_or("").to_string();
                let echo = echo_metadata(req.headers());
                let me = self.clone();
                let trailers = echo.clone();
                let resp = if self.cfg.die_after_headers {
                    grpc.server_streaming(
                        Handler(move |_r: Request<Bytes>| async move {
                            let die = stream::once(async {
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                                std::process::exit(3)
                            });
                            let s: Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>> =
                                Box::pin(die);
                            Ok(Response::new(s))
                        }),
                        req,
                    )
                    .await
                } else if self.cfg.fail_after_headers {
                    // Headers go out first, the outcome follows in the trailers: committed.
                    grpc.server_streaming(
                        Handler(move |r: Request<Bytes>| {
                            let (me, method, echo) = (me.clone(), method.clone(), echo.clone());
                            async move {
                                let one = stream::once(me.serve(method, r, echo))
                                    .map(|r| r.map(Response::into_inner));
                                let s: Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>> =
                                    Box::pin(one);
                                Ok(Response::new(s))
                            }
                        }),
                        req,
                    )
                    .await
                } else {
                    grpc.unary(
                        Handler(move |r: Request<Bytes>| {
                            me.clone().serve(method.clone(), r, echo.clone())
                        }),
                        req,
                    )
                    .await
                };
                resp.map(|body| {
                    tonic::body::Body::new(WithTrailers {
                        inner: body,
                        extra: Some(trailers),
                    })
                })
            }
        }
    }

    async fn serve(
        self: Arc<Self>,
        method: String,
        req: Request<Bytes>,
        echo: HeaderMap,
    ) -> Result<Response<Bytes>, Status> {
        if !self.cfg.delay.is_zero() {
            tokio::time::sleep(self.cfg.delay).await;
        }
        if method != "Echo" && method != "Whoami" && method != "Zeros" {
            return Err(with_metadata(
                Status::unimplemented(format!("gf-testserver: no method {method:?}")),
                &echo,
            ));
        }
        if self.cfg.fail_rate > 0.0 && fastrand::f64() < self.cfg.fail_rate {
            let mut md = MetadataMap::from_headers(echo);
            if let Some(ms) = self.cfg.pushback_ms {
                md.insert("grpc-retry-pushback-ms", MetadataValue::from(ms));
            }
            let msg = format!("gf-testserver {}: injected failure", self.cfg.name);
            return Err(Status::with_metadata(
                Code::from_i32(self.cfg.fail_code),
                msg,
                md,
            ));
        }
        let body = if method == "Echo" {
            req.into_inner()
        } else if method == "Zeros" {
            let mib: usize = std::str::from_utf8(req.get_ref())
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .filter(|&n| n <= 4096)
                .ok_or_else(|| {
                    Status::invalid_argument("Zeros: the request is a MiB count, 0..4096")
                })?;
            Bytes::from(vec![0u8; mib << 20])
        } else {
            Bytes::from(self.cfg.name.clone())
        };
        Ok(Response::new(body))
    }

    async fn health_check(
        self: Arc<Self>,
        _req: Request<Bytes>,
    ) -> Result<Response<Bytes>, Status> {
        Ok(Response::new(health_response(*self.serving.borrow())))
    }

    async fn health_watch(
        self: Arc<Self>,
        _req: Request<Bytes>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>>, Status> {
        let rx = self.serving.subscribe();
        let drain = self.draining.subscribe();
        // Sends the status and each change; once the server drains (after its NOT_SERVING has
        // gone out) the stream ends, so that it does not hold the connection open.
        let updates = stream::unfold((rx, drain, true), |(mut rx, mut drain, first)| async move {
            if !first {
                tokio::select! {
                    biased;
                    changed = rx.changed() => changed.ok()?,
                    _ = drain.wait_for(|d| *d) => return None,
                }
            }
            let status = *rx.borrow_and_update();
            Some((Ok(health_response(status)), (rx, drain, false)))
        });
        Ok(Response::new(Box::pin(updates)))
    }

    async fn set_serving(self: Arc<Self>, req: Request<Bytes>) -> Result<Response<Bytes>, Status> {
        let status = match req.get_ref().as_ref() {
            b"SERVING" => SERVING,
            b"NOT_SERVING" => NOT_SERVING,
            other => {
                return Err(Status::invalid_argument(format!(
                    "SetServing takes SERVING or NOT_SERVING, got {:?}",
                    String::from_utf8_lossy(other)
                )))
            }
        };
        self.serving
            .send_if_modified(|s| std::mem::replace(s, status) != status);
        Ok(Response::new(Bytes::new()))
    }
}

/// HealthCheckResponse { status = 1 (enum) } in protobuf wire format.
fn health_response(status: u8) -> Bytes {
    let mut b = BytesMut::with_capacity(2);
    b.extend_from_slice(&[0x08, status]);
    b.freeze()
}

fn echo_metadata(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        if k.as_str().starts_with("x-echo-") {
            out.append(k.clone(), v.clone());
        } else if k.as_str() == "grpc-previous-rpc-attempts" {
            out.append("x-gf-previous-rpc-attempts", v.clone());
        } else if k.as_str() == "grpc-encoding" {
            out.append("x-gf-request-encoding", v.clone());
        }
    }
    out
}

fn with_metadata(status: Status, extra: &HeaderMap) -> Status {
    Status::with_metadata(
        status.code(),
        status.message().to_string(),
        MetadataMap::from_headers(extra.clone()),
    )
}

/// Adapts an async fn to the tower service tonic's server helpers drive.
struct Handler<F>(F);

impl<F, Fut, M> tower_service::Service<Request<Bytes>> for Handler<F>
where
    F: FnMut(Request<Bytes>) -> Fut,
    Fut: Future<Output = Result<Response<M>, Status>>,
{
    type Response = Response<M>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Fut {
        (self.0)(req)
    }
}

/// A response body that adds headers to its trailers (the `x-echo-` metadata).
struct WithTrailers {
    inner: tonic::body::Body,
    extra: Option<HeaderMap>,
}

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_trailers() {
                    Ok(mut trailers) => {
                        if let Some(extra) = self.extra.take() {
                            for (k, v) in extra.iter() {
                                trailers.append(k.clone(), v.clone());
                            }
                        }
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame.map_data(|mut d| d.copy_to_bytes(d.remaining())),
                };
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
