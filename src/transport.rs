//! The transport: one HTTP/2 connection to one instance, over TCP. Connecting (with the PING
//! that proves the server answers), the task that drives the connection, keepalive, the tower
//! service that hands tonic's requests to h2, the errors a connection can give a request, the
//! response body, and the pass-through codec. Nothing here knows about balancing or retries:
//! an attempt takes a [`Sender`] and says what happened.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use tokio::net::TcpStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A handle for opening streams on one HTTP/2 connection (h2's client, used directly: each
/// call's request and response are driven by the calling task itself, with no per-request task
/// or channel hop in between), with the connection's [`Resets`].
#[derive(Clone)]
pub struct Sender {
    h2: h2::client::SendRequest<Bytes>,
    resets: Arc<Resets>,
}

/// How connections are set up and kept alive.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// HTTP/2 keepalive pings on idle and busy connections; None is off.
    pub keepalive_time: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// TLS to every instance; None is plaintext (h2c).
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// Why a connection closed (or stopped taking new streams).
#[derive(Debug)]
pub struct Closed {
    pub why: String,
    /// The server sent GOAWAY ENHANCE_YOUR_CALM with debug data "too_many_pings": it allows
    /// fewer keepalive pings than we sent. gRPC clients then double the keepalive time of
    /// later connections to that instance (gRFC A8).
    pub too_many_pings: bool,
}

impl Closed {
    fn new(why: String, e: Option<&h2::Error>) -> Closed {
        Closed {
            why,
            too_many_pings: e.is_some_and(too_many_pings),
        }
    }
}

/// GOAWAY ENHANCE_YOUR_CALM "too_many_pings" from the server. h2 keeps a GOAWAY's debug data
/// private but shows it in the error's text, as `(b"too_many_pings")`.
fn too_many_pings(e: &h2::Error) -> bool {
    e.is_go_away()
        && e.is_remote()
        && e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
        && e.to_string().contains("\"too_many_pings\"")
}

/// Opens TCP (+ TLS) + HTTP/2. Returns the request sender and a receiver that fires with the
/// reason when the connection closes. The connection itself runs on its own task so that, after
/// the subchannel is shut down, calls already on it can finish. `server_name` is the instance
/// record's `Metadata.server_name` (TLS only).
pub async fn connect(
    addr: &str,
    cfg: &TransportConfig,
    server_name: Option<&str>,
) -> Result<(Sender, tokio::sync::oneshot::Receiver<Closed>), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match &cfg.tls {
        None => over(tcp, addr, cfg).await,
        Some(tls) => {
            let tls = tls.handshake(tcp, addr, server_name).await?;
            over(tls, addr, cfg).await
        }
    }
}

/// The reason of an HTTP/2 failure during the handshake. Under TLS 1.3 the server checks our
/// certificate after our side of the handshake is done: its verdict (an alert such as
/// "CertificateRequired") arrives as the first read of HTTP/2, and is a TLS failure.
/// (h2 keeps only an I/O error's kind and text: tokio-rustls reports TLS failures as
/// InvalidData, which nothing else on a TLS stream does.)
fn handshake_failed(addr: &str, e: &h2::Error, tls: Option<&crate::tls::Tls>) -> String {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, InvalidData, UnexpectedEof};
    match (e.get_io(), tls) {
        (Some(io), Some(_)) if io.kind() == InvalidData => {
            format!("tls handshake with {addr}: {}", crate::tls::reason(io))
        }
        // The server's alert can be lost with the connection it closes right after (the reset
        // discards it): what TLS 1.3 servers do to a client certificate they refuse.
        (Some(io), Some(tls))
            if matches!(io.kind(), ConnectionReset | BrokenPipe | UnexpectedEof) =>
        {
            let why = if tls.has_client_certificate() {
                "it may have refused our client certificate (tls.cert_file)"
            } else {
                "it may require a client certificate (tls.cert_file, tls.key_file)"
            };
            format!(
                "tls handshake with {addr}: the server closed the connection right after the \
                 handshake ({io}): {why}"
            )
        }
        // A TLS record (an alert or a ServerHello) read as an HTTP/2 frame header announces a
        // frame of over 1 MiB: the server speaks TLS to our plaintext.
        _ if tls.is_none()
            && !e.is_remote()
            && e.reason() == Some(h2::Reason::FRAME_SIZE_ERROR) =>
        {
            format!(
            "HTTP/2 handshake with {addr}: {e}: the server's first bytes are not HTTP/2; if it \
             serves TLS, set \"tls\" in the options"
        )
        }
        // A TLS server closes at once on our plaintext preface; its alert can be lost with
        // the reset, as above.
        _ if tls.is_none()
            && e.get_io().is_some_and(|io| {
                matches!(io.kind(), ConnectionReset | BrokenPipe | UnexpectedEof)
            }) =>
        {
            format!(
                "HTTP/2 handshake with {addr}: {e}: the server closed the connection at once; \
                 if it serves TLS, set \"tls\" in the options"
            )
        }
        _ => format!("HTTP/2 handshake with {addr}: {e}"),
    }
}

/// HTTP/2 over an open byte stream.
async fn over<T>(
    io: T,
    addr: &str,
    cfg: &TransportConfig,
) -> Result<(Sender, tokio::sync::oneshot::Receiver<Closed>), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // A large connection window: h2 bounds the small frames it holds unread (responses end
    // with trailers) by half of it, and a burst of thousands of small calls must fit.
    let (h2, mut conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(64 << 20)
        .max_frame_size(1 << 16)
        .max_header_list_size(16 << 20)
        .max_concurrent_reset_streams(MAX_RESET_STREAMS)
        .max_local_error_reset_streams(None)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| handshake_failed(addr, &e, cfg.tls.as_deref()))?;
    // READY means the server answers over HTTP/2, not only that the kernel took the TCP
    // connection: a hung process still completes TCP handshakes from its listen backlog. A PING
    // it acknowledges proves it read our preface and is serving the connection. (The caller
    // bounds the whole connect attempt with the connect timeout.)
    let mut pings = conn
        .ping_pong()
        .expect("a new connection hands out its PingPong");
    pings
        .send_ping(h2::Ping::opaque())
        .map_err(|e| handshake_failed(addr, &e, cfg.tls.as_deref()))?;
    tokio::select! {
        r = &mut conn => {
            return Err(match r {
                Err(e) => handshake_failed(addr, &e, cfg.tls.as_deref()),
                Ok(()) => format!("HTTP/2 handshake with {addr}: closed by peer"),
            });
        }
        r = std::future::poll_fn(|cx| pings.poll_pong(cx)) => {
            r.map_err(|e| handshake_failed(addr, &e, cfg.tls.as_deref()))?;
        }
    }
    let keepalive = cfg
        .keepalive_time
        .map(|interval| keepalive(pings, interval, cfg.keepalive_timeout));
    let (tx, rx) = tokio::sync::oneshot::channel::<Closed>();
    let probe = h2.clone();
    let sender = Sender {
        h2,
        resets: Arc::new(Resets::default()),
    };
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut probe = Some(probe);
        let why = {
            let closed = async {
                let ended = drive(&mut conn, |cx| {
                    // The subchannel stopped listening (shut down): let the connection end
                    // once its calls are done.
                    if tx.as_mut().is_some_and(|t| t.poll_closed(cx).is_ready()) {
                        probe = None;
                    }
                    // After a GOAWAY (or a connection error) h2 refuses new streams, while the
                    // ones already open may run on for a long time: tell the subchannel now, so
                    // that it reconnects and new calls go elsewhere, and keep driving the
                    // connection for the calls on it.
                    if let Some(Poll::Ready(Err(e))) = probe.as_mut().map(|p| p.poll_ready(cx)) {
                        probe = None;
                        if let Some(t) = tx.take() {
                            let why = format!("the server is closing the connection: {e}");
                            let _ = t.send(Closed::new(why, Some(&e)));
                        }
                    }
                })
                .await;
                match ended {
                    Ok(()) => Closed::new("closed by peer".to_string(), None),
                    Err(e) => Closed::new(e.to_string(), Some(&e)),
                }
            };
            match keepalive {
                None => closed.await,
                Some(keepalive) => tokio::select! {
                    why = closed => why,
                    why = keepalive => Closed::new(why, None),
                },
            }
        };
        // Dropped before the subchannel hears of it: a call that picks this connection in
        // between fails to open its stream (never sent, so retried at once) instead of
        // starting one on a dead connection.
        drop(conn);
        drop(probe);
        if let Some(t) = tx.take() {
            let _ = t.send(why);
        }
    });
    Ok((sender, rx))
}

/// Drives a connection to its end; `after_pending` runs after every poll that leaves it open.
async fn drive<F: std::future::Future + Unpin>(
    mut conn: F,
    mut after_pending: impl FnMut(&mut std::task::Context<'_>),
) -> F::Output {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut conn).poll(cx) {
        Poll::Ready(out) => Poll::Ready(out),
        Poll::Pending => {
            after_pending(cx);
            Poll::Pending
        }
    })
    .await
}

/// Sends a PING every `interval`, also while no call is in flight (grpc-go's client does so only
/// with PermitWithoutStream; servers may limit how often they accept pings) and returns why the
/// connection is dead once a PONG does not come back within `timeout`. Dropping the connection
/// (returning from its task) then fails the calls still on it with UNAVAILABLE.
async fn keepalive(mut pings: h2::PingPong, interval: Duration, timeout: Duration) -> String {
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = pings.send_ping(h2::Ping::opaque()) {
            return format!("keepalive ping: {e}");
        }
        let pong = std::future::poll_fn(|cx| pings.poll_pong(cx));
        match tokio::time::timeout(timeout, pong).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keepalive ping: {e}"),
            Err(_) => return format!("keepalive: no PING ack within {} ms", timeout.as_millis()),
        }
    }
}

/// The pass-through codec: request and response messages are the caller's bytes.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Why a request could not be handed to the connection.
#[derive(Clone, Debug)]
pub struct ConnError {
    pub message: String,
    /// The request certainly did not reach the server.
    pub never_sent: bool,
    /// The connection failed (UNAVAILABLE); otherwise h2 rejected the request itself (INTERNAL).
    pub connection: bool,
    /// The whole connection takes no new streams (a GOAWAY, an I/O error), not just this one
    /// (a stream the server refused or reset).
    pub refuses_streams: bool,
}

impl ConnError {
    /// From an h2 error; `never_sent` is kept only for connection failures (a request h2
    /// rejected as malformed would be rejected on every connection).
    pub fn new(e: h2::Error, never_sent: bool) -> ConnError {
        let connection = e.is_io() || e.is_go_away() || e.is_remote() || e.reason().is_some();
        ConnError {
            refuses_streams: e.is_io() || e.is_go_away(),
            message: if connection {
                format!("connection closed: {e}")
            } else {
                format!("request rejected by HTTP/2: {e}")
            },
            never_sent: never_sent && connection,
            connection,
        }
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnError {}

/// A connection's sender as the tower service tonic's client drives, and where the attempt's
/// message bytes are counted (when metrics are on).
pub struct Conn(pub Sender, pub Option<Arc<WireBytes>>);

/// The bytes of one unary attempt's messages as they went over the wire: compressed when the
/// message was, without gRPC's 5-byte message prefix (gRFC A66's
/// `*_total_compressed_message_size`).
#[derive(Debug, Default)]
pub struct WireBytes {
    sent: AtomicU64,
    rcvd: AtomicU64,
}

/// gRPC's length prefix: a compressed flag and a 4-byte length.
const MESSAGE_PREFIX: u64 = 5;

impl WireBytes {
    /// The request message's bytes, once it was handed to the connection (0 before).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The response message's bytes received (a unary response is one message).
    pub fn rcvd(&self) -> u64 {
        self.rcvd
            .load(Ordering::Relaxed)
            .saturating_sub(MESSAGE_PREFIX)
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<ResponseBody>, ConnError>> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Conn {
    type Response = http::Response<ResponseBody>;
    type Error = ConnError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        self.0
            .h2
            .poll_ready(cx)
            .map_err(|e| ConnError::new(e, true))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> ResponseFuture {
        let Sender {
            h2: mut sender,
            resets,
        } = self.0.clone();
        let wire = self.1.clone();
        Box::pin(async move {
            // A unary request is one message: collect it and queue HEADERS and one DATA frame
            // with END_STREAM back to back, so they normally leave in one write. Sent as tonic
            // streams it (a DATA frame, then an empty one), a burst of small calls trips h2's
            // limit on pending small frames (GOAWAY ENHANCE_YOUR_CALM) at the server.
            let (parts, body) = req.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .map_err(|e| ConnError {
                    message: format!("encoding the request: {e}"),
                    never_sent: false,
                    connection: false,
                    refuses_streams: false,
                })?
                .to_bytes();
            resets.room().await;
            if let Some(w) = &wire {
                let len = (bytes.len() as u64).saturating_sub(MESSAGE_PREFIX);
                w.sent.store(len, Ordering::Relaxed);
            }
            let (response, mut stream) = sender
                .send_request(http::Request::from_parts(parts, ()), bytes.is_empty())
                .map_err(|e| ConnError::new(e, true))?;
            if !bytes.is_empty() {
                if let Err(send_error) = stream.send_data(bytes, true) {
                    // The stream can close between the two: the connection's task may take in
                    // a GOAWAY meanwhile, which closes every stream above its last stream id.
                    // Its response then says why (and whether the server saw the request); a
                    // stream still open is reset so that its response ends now.
                    stream.send_reset(h2::Reason::CANCEL);
                    return Err(match response.await {
                        Err(e) if unprocessed(&e) => ConnError::new(e, true),
                        Err(e) if e.is_io() || e.is_remote() => ConnError::new(e, false),
                        // HEADERS may have left already: not certainly unsent.
                        _ => ConnError::new(send_error, false),
                    });
                }
            }
            let id = u32::from(stream.stream_id());
            let mut unanswered = Unanswered {
                stream: Some((response, stream)),
                id,
                resets: &resets,
            };
            let (response, _) = unanswered.stream.as_mut().expect("just set");
            let response = response.await.map_err(|e| {
                let never_sent = unprocessed(&e);
                ConnError::new(e, never_sent)
            });
            let (_, stream) = unanswered.stream.take().expect("still set");
            if response.is_ok() {
                resets.answered(id);
            }
            Ok(response?.map(|body| ResponseBody {
                body,
                _request: stream,
                wire,
            }))
        })
    }
}

/// How many streams we reset that h2 remembers (for 1 s each), so that the frames the server
/// sends on them meanwhile are dropped quietly. h2's default, 50, is exceeded by any burst of
/// cancelled calls or losing hedges; each frame on a forgotten stream then costs a reset of
/// h2's own, and h2 ends the connection after 1,024 of those in its lifetime (GOAWAY
/// ENHANCE_YOUR_CALM "too_many_internal_resets", every call on it failing). Each entry is a
/// few hundred bytes. And the lifetime cap is off: it guards a server against abusive clients;
/// a client that drops its connection to a misbehaving server only fails over to another one.
const MAX_RESET_STREAMS: usize = 4096;

/// How a connection resets the streams of cancelled attempts without looking like an HTTP/2
/// rapid-reset attack.
///
/// Servers count resets (RST_STREAM) of streams they have read but not yet handed to their
/// application; h2, and so hyper and tonic servers, end the connection with GOAWAY
/// ENHANCE_YOUR_CALM "too_many_resets" once more than 20 are pending at once, failing every
/// call on it. Losing hedges and cancelled calls are exactly such resets when the server is
/// behind: a paused or overloaded instance reads a whole backlog of requests and their resets
/// in one go. No age makes a reset safe; an answer does. A server hands streams to its
/// application in the order they were opened, so once a stream has been answered, it and every
/// stream opened before it have been taken in and may be reset freely.
///
/// So a stream not answered yet, opened after the last answered one, is reset at once only
/// while fewer than [`UNCONFIRMED_MAX`] such resets are outstanding. Past that it is held: a
/// small task waits for its answer (or for a later stream's) and resets it then. An instance
/// that always loses the hedging race answers only streams that were given up on, so the held
/// streams must confirm themselves. The caller's call is over at once either way; only the
/// RST_STREAM waits. While nothing is outstanding or held, a call pays two atomic loads for
/// this (`answered`'s and `room`'s).
///
/// A server that takes nothing in for a while (paused, or starved of CPU) while its streams
/// keep losing hedges piles up held streams. Past [`HELD_MAX`] of them the connection opens no
/// new stream until the server has taken some in: resetting at once instead would hand the
/// server its whole backlog of resets in one read, the GOAWAY this exists to avoid. Attempts
/// that wait so go nowhere else; a hedge to another instance, or the call's end, drops them
/// before they open a stream.
pub struct Resets {
    /// Whether resets are outstanding or held: answers then update `answered`.
    watching: AtomicBool,
    /// The highest stream id answered while watching; held streams wait on it.
    answered: tokio::sync::watch::Sender<u32>,
    /// Stream ids reset while the server may not have taken them in yet.
    unconfirmed: Mutex<VecDeque<u32>>,
    /// Streams waiting for an answer before their reset.
    held: AtomicUsize,
    /// Wakes the streams waiting to open while `held` is at [`HELD_MAX`].
    room: tokio::sync::Notify,
}

impl Default for Resets {
    fn default() -> Resets {
        Resets {
            watching: AtomicBool::new(false),
            answered: tokio::sync::watch::Sender::new(0),
            unconfirmed: Mutex::new(VecDeque::new()),
            held: AtomicUsize::new(0),
            room: tokio::sync::Notify::new(),
        }
    }
}

type OpenStream = (h2::client::ResponseFuture, h2::SendStream<Bytes>);

/// Below h2's limit of 20 with room for a few from elsewhere (a server that counts a little
/// differently, resets from before the last answer the server has not applied yet).
const UNCONFIRMED_MAX: usize = 8;

/// At this many held streams a connection opens no new stream until one is released (see
/// [`Resets`]). It bounds the backlog a stalled server has to work through and the memory
/// held for it (a stream's state and a small task each).
const HELD_MAX: usize = 1024;

impl Resets {
    /// Stream `id` was answered: the server has taken it and every earlier stream in.
    fn answered(&self, id: u32) {
        if !self.watching.load(Ordering::Relaxed) {
            return;
        }
        self.answered.send_if_modified(|a| {
            let newer = id > *a;
            if newer {
                *a = id;
            }
            newer
        });
        let answered = *self.answered.borrow();
        let mut unconfirmed = self.unconfirmed.lock().expect("resets lock");
        // (Cancellations come roughly, not strictly, in stream order: no early exit.)
        unconfirmed.retain(|&u| u > answered);
        if unconfirmed.is_empty() && self.held.load(Ordering::Acquire) == 0 {
            self.watching.store(false, Ordering::Relaxed);
        }
    }

    /// A stream the server has not answered is being given up: reset it now or hold it.
    fn cancel(self: &Arc<Self>, id: u32, stream: OpenStream) {
        if id <= *self.answered.borrow() {
            return; // taken in already: the reset is safe
        }
        {
            let mut unconfirmed = self.unconfirmed.lock().expect("resets lock");
            self.watching.store(true, Ordering::Relaxed);
            let answered = *self.answered.borrow();
            unconfirmed.retain(|&u| u > answered);
            if unconfirmed.len() < UNCONFIRMED_MAX {
                unconfirmed.push_back(id);
                return; // `stream` is dropped, so reset, after the lock
            }
            self.held.fetch_add(1, Ordering::AcqRel);
        }
        let resets = self.clone();
        let mut answers = self.answered.subscribe();
        crate::runtime::handle().spawn(async move {
            let (response, _send) = stream;
            tokio::select! {
                r = response => if r.is_ok() {
                    resets.answered(id);
                },
                _ = answers.wait_for(|&a| a >= id) => {}
            }
            if resets.held.fetch_sub(1, Ordering::AcqRel) == HELD_MAX {
                resets.room.notify_waiters();
            }
        });
    }

    /// Waits while the connection holds [`HELD_MAX`] streams; at once otherwise.
    async fn room(&self) {
        while self.held.load(Ordering::Acquire) >= HELD_MAX {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a release in between is not missed.
            notified.as_mut().enable();
            if self.held.load(Ordering::Acquire) < HELD_MAX {
                return;
            }
            notified.await;
        }
    }
}

/// A request sent whose response headers have not come back. Dropped so (a hedge that lost, a
/// cancelled call, a deadline), it goes to the connection's [`Resets`].
struct Unanswered<'a> {
    stream: Option<OpenStream>,
    id: u32,
    resets: &'a Arc<Resets>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.resets.cancel(self.id, stream);
        }
    }
}

/// A stream the server refused, or one above a GOAWAY's last stream id, was never processed:
/// retrying it is safe (gRFC A6 transparent retry).
fn unprocessed(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

/// A response body read straight from the h2 stream, returning flow-control credit as data is
/// taken. It keeps the request side of the stream too: dropping both resets the stream.
pub struct ResponseBody {
    body: h2::RecvStream,
    _request: h2::SendStream<Bytes>,
    wire: Option<Arc<WireBytes>>,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        let body = &mut this.body;
        if !body.is_end_stream() {
            match std::task::ready!(body.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = body.flow_control().release_capacity(data.len());
                    if let Some(w) = &this.wire {
                        w.rcvd.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {}
            }
        }
        match std::task::ready!(body.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// Opens a server-streaming call on a connection (used by health checking).
pub async fn server_stream(
    sender: Sender,
    origin: http::Uri,
    path: &'static str,
    request: Bytes,
) -> Result<tonic::Streaming<Bytes>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::with_origin(Conn(sender, None), origin);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::from_static(path);
    grpc.server_streaming(tonic::Request::new(request), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

/// The connection error behind a tonic status, when the request failed in the transport.
pub fn conn_error(status: &tonic::Status) -> Option<&ConnError> {
    std::error::Error::source(status).and_then(|s| s.downcast_ref::<ConnError>())
}

/// True when the error chain shows the connection itself failing (I/O error, GOAWAY, a closed
/// or truncated connection) rather than a status from the server.
pub fn connection_lost(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        if let Some(h) = e.downcast_ref::<h2::Error>() {
            if h.is_io() || h.is_go_away() {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// Errors tonic built from a broken connection rather than from a server's grpc-status.
pub fn is_transport_error(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}
