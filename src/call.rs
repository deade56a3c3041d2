//! One attempt: a unary call with raw request bytes over one subchannel's HTTP/2 connection,
//! through `tonic::client::Grpc` and a pass-through codec (no protobuf, no codegen).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};

use crate::balancer::subchannel::{Sender, Subchannel};
use crate::status::{Code, Status};

/// Metadata as ordered (key, value) pairs. Keys ending in `-bin` carry raw bytes; all other
/// values are printable ASCII.
pub type Metadata = Vec<(String, Bytes)>;

/// What every attempt of a call sends, and how it reads the response.
pub struct Request<'a> {
    pub path: &'a PathAndQuery,
    pub message: Bytes,
    pub metadata: &'a Metadata,
    pub max_response_bytes: usize,
    pub response_metadata: ResponseMetadata,
}

/// Whether a successful call's response headers and trailers are copied into its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseMetadata {
    Keep,
    /// The caller wants only the response bytes (a failed call keeps its metadata anyway).
    Drop,
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// The call's deadline, across all attempts; None = no deadline.
    pub timeout: Option<Duration>,
    /// Request metadata sent with every attempt.
    pub metadata: Metadata,
    /// Overrides the method config's `waitForReady`.
    pub wait_for_ready: Option<bool>,
}

impl CallOptions {
    /// Checks metadata keys and values the way gRPC does: lower-case token keys, no reserved
    /// `grpc-` keys, printable ASCII values unless the key ends in `-bin`.
    pub fn validate(&self) -> Result<(), Status> {
        for (key, value) in &self.metadata {
            validate_metadata(key, value)?;
        }
        Ok(())
    }
}

pub fn validate_metadata(key: &str, value: &[u8]) -> Result<(), Status> {
    let bad = |why: &str| Status::invalid_argument(format!("metadata key {key:?}: {why}"));
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'))
    {
        return Err(bad("keys are non-empty and use only a-z 0-9 - _ ."));
    }
    if key.starts_with("grpc-") {
        return Err(bad("grpc- keys are reserved"));
    }
    if matches!(
        key,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te"
    ) {
        return Err(bad("connection-specific headers are not allowed in HTTP/2"));
    }
    if !key.ends_with("-bin") && !value.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(bad(
            "a value must be printable ASCII unless the key ends in -bin",
        ));
    }
    Ok(())
}

/// What a finished call returns, successful or not.
#[derive(Clone, Debug)]
pub struct CallResult {
    pub status: Status,
    pub message: Bytes,
    pub headers: Metadata,
    pub trailers: Metadata,
}

impl CallResult {
    pub fn error(status: Status) -> CallResult {
        CallResult {
            status,
            message: Bytes::new(),
            headers: Vec::new(),
            trailers: Vec::new(),
        }
    }

    pub fn into_result(self) -> Result<Bytes, Status> {
        if self.status.code == Code::Ok {
            Ok(self.message)
        } else {
            Err(self.status)
        }
    }
}

/// Server pushback (gRFC A6 `grpc-retry-pushback-ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushback {
    Delay(Duration),
    Stop,
}

/// How one attempt ended.
pub struct Attempt {
    pub result: CallResult,
    /// Response headers arrived: the call is committed and is not retried (A6).
    pub committed: bool,
    /// The request never left the client: retry without counting an attempt (A6).
    pub transparent: bool,
    pub pushback: Option<Pushback>,
}

/// Sends one attempt of `req` on `sc`. `timeout` is what is left of the call's deadline (sent
/// as `grpc-timeout`; the caller enforces it locally too).
pub async fn attempt(
    sc: &Subchannel,
    req: &Request<'_>,
    timeout: Option<Duration>,
    previous_attempts: u32,
) -> Attempt {
    let Request {
        path,
        metadata,
        max_response_bytes,
        response_metadata,
        ..
    } = *req;
    let Some(sender) = sc.sender() else {
        return failed(
            Status::unavailable(format!("{}: not connected", sc.addr)),
            true,
        );
    };
    let mut grpc = tonic::client::Grpc::with_origin(Conn((*sender).clone()), sc.origin.clone())
        .max_decoding_message_size(max_response_bytes)
        .max_encoding_message_size(usize::MAX);
    if let Err(e) = grpc.ready().await {
        sc.connection_refused(&sender);
        return failed(Status::unavailable(format!("{}: {e}", sc.addr)), true);
    }
    let mut request = tonic::Request::new(req.message.clone());
    let md = request.metadata_mut();
    for (key, value) in metadata {
        if key.ends_with("-bin") {
            if let Ok(k) = MetadataKey::from_bytes(key.as_bytes()) {
                md.append_bin(k, MetadataValue::from_bytes(value));
            }
        } else if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_ref()),
        ) {
            md.append(k, v);
        }
    }
    if previous_attempts > 0 {
        md.insert(
            "grpc-previous-rpc-attempts",
            MetadataValue::from(previous_attempts),
        );
    }
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    let response = match grpc.server_streaming(request, path.clone(), RawCodec).await {
        Ok(r) => r,
        Err(status) => {
            let refused = std::error::Error::source(&status)
                .and_then(|s| s.downcast_ref::<ConnError>())
                .is_some_and(|e| e.refuses_streams && e.never_sent);
            if refused {
                sc.connection_refused(&sender);
            }
            return from_status(sc, status, Vec::new(), false);
        }
    };
    let (header_map, mut stream, _) = response.into_parts();
    let headers = || to_pairs(&header_map);
    let message = match stream.message().await {
        Ok(Some(m)) => m,
        Ok(None) => {
            let st = Status::internal(format!("{}: the server sent no response message", sc.addr));
            return committed_failure(st, headers());
        }
        Err(status)
            if status.code() == Code::OutOfRange
                && status.message().contains("message length too large") =>
        {
            // tonic says OUT_OF_RANGE for a response over the decode limit; gRPC says
            // RESOURCE_EXHAUSTED (maxResponseMessageBytes).
            let st = Status::resource_exhausted(format!("{}: {}", sc.addr, status.message()));
            return committed_failure(st, headers());
        }
        Err(status) => return from_status(sc, status, headers(), true),
    };
    match stream.trailers().await {
        Ok(trailers) => {
            let (headers, trailers) = match response_metadata {
                ResponseMetadata::Keep => (
                    headers(),
                    trailers.as_ref().map(to_pairs).unwrap_or_default(),
                ),
                ResponseMetadata::Drop => (Vec::new(), Vec::new()),
            };
            Attempt {
                result: CallResult {
                    status: Status::new(Code::Ok, ""),
                    message,
                    headers,
                    trailers,
                },
                committed: true,
                transparent: false,
                pushback: None,
            }
        }
        Err(status) => from_status(sc, status, headers(), true),
    }
}

/// A failure decided after the response headers arrived: not retried (A6).
fn committed_failure(status: Status, headers: Metadata) -> Attempt {
    Attempt {
        result: CallResult {
            headers,
            ..CallResult::error(status)
        },
        committed: true,
        transparent: false,
        pushback: None,
    }
}

fn failed(status: Status, transparent: bool) -> Attempt {
    Attempt {
        result: CallResult::error(status),
        committed: false,
        transparent,
        pushback: None,
    }
}

/// Maps a tonic status (a server's status, or a transport error) to an attempt outcome.
fn from_status(
    sc: &Subchannel,
    status: tonic::Status,
    headers: Metadata,
    committed: bool,
) -> Attempt {
    let pushback = status.metadata().get("grpc-retry-pushback-ms").map(|v| {
        match v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()) {
            Some(ms) if ms >= 0 => Pushback::Delay(Duration::from_millis(ms as u64)),
            _ => Pushback::Stop,
        }
    });
    let trailers = to_pairs(status.metadata());
    let source_is_conn = std::error::Error::source(&status)
        .and_then(|s| s.downcast_ref::<ConnError>())
        .cloned();
    // The connection broke mid-response: that is UNAVAILABLE (tonic says UNKNOWN or INTERNAL),
    // and since a unary call shows the caller nothing before it ends, the call is not
    // committed by the headers that did arrive: only a status the server sent commits it.
    let lost = source_is_conn.is_none() && connection_lost(&status);
    let committed = committed && !lost;
    let (code, message, transparent) = match source_is_conn {
        Some(e) => (
            if e.connection {
                Code::Unavailable
            } else {
                Code::Internal
            },
            format!("{}: {}", sc.addr, e.message),
            e.never_sent,
        ),
        None => {
            let transport = status.metadata().is_empty() && is_transport_error(&status);
            let msg = if transport {
                format!("{}: {}", sc.addr, status.message())
            } else {
                status.message().to_string()
            };
            let code = if lost {
                Code::Unavailable
            } else {
                status.code()
            };
            (code, msg, false)
        }
    };
    Attempt {
        result: CallResult {
            status: Status::new(code, message),
            message: Bytes::new(),
            headers,
            trailers,
        },
        committed,
        transparent,
        pushback,
    }
}

/// True when the error chain shows the connection itself failing (I/O error, GOAWAY, a closed
/// or truncated connection) rather than a status from the server.
fn connection_lost(status: &tonic::Status) -> bool {
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
fn is_transport_error(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

fn to_pairs(md: &MetadataMap) -> Metadata {
    let mut out = Vec::new();
    for kv in md.iter() {
        match kv {
            KeyAndValueRef::Ascii(k, v) => {
                let key = k.as_str();
                if matches!(key, "grpc-status" | "grpc-message" | "content-type") {
                    continue;
                }
                out.push((key.to_string(), Bytes::copy_from_slice(v.as_bytes())));
            }
            KeyAndValueRef::Binary(k, v) => {
                if let Ok(bytes) = v.to_bytes() {
                    out.push((k.as_str().to_string(), bytes));
                }
            }
        }
    }
    out
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
    fn new(e: h2::Error, never_sent: bool) -> ConnError {
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

/// The subchannel's HTTP/2 sender as the tower service tonic's client drives.
struct Conn(Sender);

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<ResponseBody>, ConnError>> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Conn {
    type Response = http::Response<ResponseBody>;
    type Error = ConnError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        self.0.poll_ready(cx).map_err(|e| ConnError::new(e, true))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> ResponseFuture {
        let mut sender = self.0.clone();
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
            let response = response.await.map_err(|e| {
                let never_sent = unprocessed(&e);
                ConnError::new(e, never_sent)
            })?;
            Ok(response.map(|body| ResponseBody {
                body,
                _request: stream,
            }))
        })
    }
}

/// A stream the server refused, or one above a GOAWAY's last stream id, was never processed:
/// retrying it is safe (gRFC A6 transparent retry).
fn unprocessed(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

/// A response body read straight from the h2 stream, returning flow-control credit as data is
/// taken. It keeps the request side of the stream too: dropping both resets the stream.
struct ResponseBody {
    body: h2::RecvStream,
    _request: h2::SendStream<Bytes>,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        let body = &mut self.body;
        if !body.is_end_stream() {
            match std::task::ready!(body.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = body.flow_control().release_capacity(data.len());
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
pub(crate) async fn server_stream(
    sender: Sender,
    origin: http::Uri,
    path: &'static str,
    request: Bytes,
) -> Result<tonic::Streaming<Bytes>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::with_origin(Conn(sender), origin);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::from_static(path);
    grpc.server_streaming(tonic::Request::new(request), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}
