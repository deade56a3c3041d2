//! The C ABI as a program drives it: a sequence of connect / invoke (sync, `_ex`, async,
//! async `_ex`, queued) / cancel / free / poll / wait / stats / shutdown / close operations in
//! any order, with fuzzed arguments (NULL, invalid UTF-8, NULL with a length, unknown clients),
//! against two `gf-testserver` processes (one healthy, one failing half its calls) started once
//! per fuzz process, and closed ports. Deadlines stay short so that one input runs in
//! milliseconds.
//!
//! Invariants: nothing panics or crashes (ASan watches the memory); every return value is a
//! status code; `error_out` is written exactly as documented (NULL on 0, a UTF-8 message
//! otherwise); NULL client, method or request-with-length is 3; a shut-down client answers 9;
//! an OK echo returns the request; every accepted async call calls back exactly once and a
//! rejected one never; a queue hands out no more outcomes than it was given calls.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};
use std::process::{Child, Command, Stdio};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use grpc_failover::ffi::*;

const GF_INVALID_ARGUMENT: i32 = 3;
const GF_FAILED_PRECONDITION: i32 = 9;
const MAX_OPS: usize = 48;
const MAX_CLIENTS: usize = 4;

#[derive(Arbitrary, Debug)]
enum Text {
    Null,
    Known(u8),
    /// Any bytes up to the first NUL (as C sees them): invalid UTF-8 included.
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Request {
    Empty,
    /// NULL with a non-zero length: must be refused.
    NullWithLength(u8),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct CallArgs {
    client: u8,
    method: Text,
    request: Request,
    timeout_ms: u8,
    null_error_out: bool,
}

#[derive(Arbitrary, Debug)]
struct ExOptions {
    null_options: bool,
    timeout_ms: u8,
    wait_for_ready: i8,
    metadata: Vec<(Text, Vec<u8>)>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Connect {
        target: Text,
        options: Text,
        null_client_out: bool,
    },
    Invoke {
        args: CallArgs,
        null_response_out: bool,
    },
    InvokeEx {
        args: CallArgs,
        options: ExOptions,
        null_result_out: bool,
    },
    InvokeAsync {
        args: CallArgs,
        keep_call: bool,
        null_callback: bool,
    },
    InvokeAsyncEx {
        args: CallArgs,
        options: ExOptions,
        keep_call: bool,
    },
    NewQueue,
    InvokeQueued {
        args: CallArgs,
        queue: u8,
        null_queue: bool,
        keep_call: bool,
        tag: u64,
    },
    Poll {
        queue: u8,
        max: u8,
    },
    Wait {
        queue: u8,
        max: u8,
    },
    Cancel {
        call: u8,
    },
    FreeCall {
        call: u8,
    },
    Stats {
        client: u8,
    },
    Shutdown {
        client: u8,
    },
    Close {
        client: u8,
    },
    Sleep {
        ms: u8,
    },
}

/// Callbacks of accepted async calls, over the whole process (inputs run one at a time and
/// each waits for its own callbacks before it ends).
static CALLBACKS: AtomicU64 = AtomicU64::new(0);

struct Servers {
    healthy: String,
    flaky: String,
    _children: Vec<Child>,
}

/// The two test servers, started on first use. They die with this process (PDEATHSIG).
fn servers() -> &'static Option<Servers> {
    static SERVERS: OnceLock<Option<Servers>> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let path = std::env::var("GF_TESTSERVER").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/release/gf-testserver"
            )
            .into()
        });
        if !std::path::Path::new(&path).exists() {
            eprintln!(
                "abi_sequence: {path} is missing (cargo build --release --bins); closed ports only"
            );
            return None;
        }
        let healthy = start(&path, &["--name", "healthy"]);
        let flaky = start(
            &path,
            &["--name", "flaky", "--fail-rate", "0.5", "--delay-ms", "2"],
        );
        Some(Servers {
            healthy: healthy.1,
            flaky: flaky.1,
            _children: vec![healthy.0, flaky.0],
        })
    })
}

fn start(path: &str, args: &[&str]) -> (Child, String) {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(path);
    command
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; the child dies when this process does.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start gf-testserver");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("gf-testserver's first line");
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("gf-testserver said {line:?}"))
        .to_string();
    (child, addr)
}

fn known_target(i: u8) -> String {
    let (healthy, flaky) = match servers() {
        Some(s) => (s.healthy.as_str(), s.flaky.as_str()),
        None => ("127.0.0.1:1", "127.0.0.1:1"),
    };
    match i % 8 {
        0 | 1 => format!("static:///{healthy}"),
        2 => format!("static:///{flaky}"),
        3 => format!("static:///{healthy},{flaky}"),
        4 => format!("static:///127.0.0.1:1,{healthy}"),
        5 => "static:///127.0.0.1:1".into(),
        6 => "etcd:///fuzz/service".into(),
        _ => "dns:///nope:1".into(),
    }
}

const OPTIONS: &[&str] = &[
    "",
    "{}",
    r#"{"connect_timeout_ms":20,"etcd":{"endpoints":["127.0.0.1:1"],"dial_timeout_ms":10}}"#,
    r#"{"service_config":{"loadBalancingConfig":[{"round_robin":{}}],"methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":3,"initialBackoff":"0.001s","maxBackoff":"0.002s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]}}"#,
    r#"{"service_config":{"methodConfig":[{"name":[{}],"hedgingPolicy":{"maxAttempts":3,"hedgingDelay":"0.001s","nonFatalStatusCodes":["UNAVAILABLE"]}}]}}"#,
    r#"{"service_config":{"loadBalancingConfig":[{"weighted_round_robin":{}}],"methodConfig":[{"name":[{}],"waitForReady":true,"timeout":"0.02s"}]}}"#,
    r#"{"nonblocking_callbacks":true,"max_metadata_bytes":64}"#,
    r#"{"max_in_flight_per_instance":1,"keepalive_time_ms":10000}"#,
    "not json",
    "[]",
];

const METHODS: &[&str] = &[
    "/x.Y/Echo",
    "/x.Y/Whoami",
    "/x.Y/Nope",
    "/grpc.health.v1.Health/Check",
    "x.Y/Echo",
    "/x.Y/",
    "",
    "/a?b#c/Echo",
];

const KEYS: &[&str] = &[
    "x-echo-foo",
    "x-echo-raw-bin",
    "Upper",
    "grpc-status",
    "te",
    "k",
];

/// A C string argument: the CString (kept alive by the caller) and the pointer to pass.
fn c_text(text: &Text, known: impl Fn(u8) -> String) -> (Option<CString>, *const c_char) {
    let s = match text {
        Text::Null => return (None, ptr::null()),
        Text::Known(i) => CString::new(known(*i)).expect("no NUL"),
        Text::Raw(bytes) => {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            CString::new(&bytes[..end]).expect("no NUL")
        }
    };
    let p = s.as_ptr();
    (Some(s), p)
}

fn is_valid_utf8(text: &Text) -> bool {
    match text {
        Text::Null => false,
        Text::Known(_) => true,
        Text::Raw(b) => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            std::str::from_utf8(&b[..end]).is_ok()
        }
    }
}

/// The request pointer and length; `data` keeps the bytes alive.
fn request(req: &Request) -> (*const u8, usize, Vec<u8>) {
    match req {
        Request::Empty => (ptr::null(), 0, Vec::new()),
        Request::NullWithLength(n) => (ptr::null(), usize::from(*n).max(1), Vec::new()),
        Request::Bytes(b) => {
            let data = b.clone();
            (data.as_ptr(), data.len(), data)
        }
    }
}

/// Checks a status return and its `error_out`, then frees the message.
fn check_status(what: &str, rc: i32, error: *mut c_char, had_error_out: bool) {
    assert!((0..=16).contains(&rc), "{what}: {rc} is not a status code");
    if !had_error_out {
        return;
    }
    if rc == 0 {
        assert!(error.is_null(), "{what}: error_out written on success");
        return;
    }
    assert!(!error.is_null(), "{what}: {rc} without a message");
    // SAFETY: a NUL-terminated string from the library, freed once here.
    let message = unsafe { CStr::from_ptr(error) };
    assert!(message.to_str().is_ok(), "{what}: message not UTF-8");
    assert!(!message.to_bytes().is_empty(), "{what}: empty message");
    gf_string_free(error);
}

unsafe extern "C" fn on_done(
    user_data: *mut c_void,
    code: i32,
    response: *const u8,
    len: usize,
    message: *const c_char,
) {
    assert!((0..=16).contains(&code));
    assert!(len == 0 || !response.is_null());
    if !message.is_null() {
        assert!(CStr::from_ptr(message).to_str().is_ok());
    }
    (*(user_data as *const AtomicU64)).fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn on_result(user_data: *mut c_void, result: *mut gf_result) {
    check_result(result);
    gf_result_free(result);
    (*(user_data as *const AtomicU64)).fetch_add(1, Ordering::SeqCst);
}

fn check_result(result: *mut gf_result) {
    assert!(!result.is_null());
    // SAFETY: a live result from the library.
    unsafe {
        let code = gf_result_code(result);
        assert!((0..=16).contains(&code), "result code {code}");
        let message = gf_result_message(result);
        if !message.is_null() {
            assert!(CStr::from_ptr(message).to_str().is_ok());
        }
        let mut len = usize::MAX;
        let data = gf_result_response(result, &mut len);
        assert!(
            len == 0 || (code == 0 && !data.is_null()),
            "response on {code}"
        );
    }
}

struct Client {
    handle: *mut gf_client,
    shut_down: bool,
}

struct Queue {
    handle: *mut gf_queue,
    given: u64,
    taken: u64,
}

#[derive(Default)]
struct State {
    clients: Vec<Client>,
    queues: Vec<Queue>,
    calls: Vec<*mut gf_call>,
    callbacks_expected: u64,
}

impl State {
    fn client(&self, i: u8) -> (*mut gf_client, bool) {
        match self.clients.get(usize::from(i)) {
            Some(c) => (c.handle, c.shut_down),
            None => (ptr::null_mut(), false),
        }
    }
}

/// Sets up call options; the caller frees them.
fn call_options(opts: &ExOptions) -> *mut gf_call_options {
    if opts.null_options {
        return ptr::null_mut();
    }
    let o = gf_call_options_new();
    assert!(!o.is_null());
    gf_call_options_set_timeout_ms(o, 1 + u32::from(opts.timeout_ms % 50));
    gf_call_options_set_wait_for_ready(o, i32::from(opts.wait_for_ready));
    for (key, value) in opts.metadata.iter().take(4) {
        let (_k, key_ptr) = c_text(key, |i| KEYS[usize::from(i) % KEYS.len()].into());
        let mut error: *mut c_char = ptr::null_mut();
        let rc = gf_call_options_add_metadata(o, key_ptr, value.as_ptr(), value.len(), &mut error);
        check_status("add_metadata", rc, error, true);
        if key_ptr.is_null() {
            assert_eq!(rc, GF_INVALID_ARGUMENT);
        }
    }
    o
}

/// The common argument checks of every invoke variant: a NULL or invalid client, method or
/// request with a length is refused with 3; a shut-down client with 9 (or 3 if an argument
/// is also wrong).
fn check_args(
    what: &str,
    rc: i32,
    client: *mut gf_client,
    shut_down: bool,
    args: &CallArgs,
    req_len_bad: bool,
) {
    if client.is_null() || !is_valid_utf8(&args.method) || req_len_bad {
        assert_eq!(rc, GF_INVALID_ARGUMENT, "{what}: {args:?}");
    } else if shut_down {
        assert!(
            rc == GF_FAILED_PRECONDITION || rc == GF_INVALID_ARGUMENT,
            "{what} on a shut-down client: {rc}"
        );
    }
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    CALLBACKS.store(0, Ordering::SeqCst);
    let counter = &CALLBACKS as *const AtomicU64 as *mut c_void;
    let mut st = State::default();
    for op in &ops {
        step(&mut st, op, counter);
    }
    finish(st);
}

fn method_of(t: &Text) -> (Option<CString>, *const c_char) {
    c_text(t, |i| METHODS[usize::from(i) % METHODS.len()].into())
}

fn is_echo(t: &Text) -> bool {
    matches!(t, Text::Known(i) if usize::from(*i) % METHODS.len() == 0)
}

fn step(st: &mut State, op: &Op, counter: *mut c_void) {
    // SAFETY: every pointer passed below is NULL, a live handle this state owns, or points into
    // a buffer that outlives the call; freed handles are removed from the state first.
    unsafe {
        match op {
            Op::Connect {
                target,
                options,
                null_client_out,
            } => {
                if st.clients.len() >= MAX_CLIENTS {
                    return;
                }
                let (_t, target_ptr) = c_text(target, known_target);
                let (_o, options_ptr) =
                    c_text(options, |i| OPTIONS[usize::from(i) % OPTIONS.len()].into());
                let mut client: *mut gf_client = ptr::null_mut();
                let mut error: *mut c_char = ptr::null_mut();
                let out = out_ptr(&mut client, *null_client_out);
                let rc = gf_connect(target_ptr, options_ptr, out, &mut error);
                check_status("gf_connect", rc, error, true);
                if target_ptr.is_null() || *null_client_out {
                    assert_eq!(rc, GF_INVALID_ARGUMENT);
                }
                if rc == 0 {
                    assert!(!client.is_null());
                    st.clients.push(Client {
                        handle: client,
                        shut_down: false,
                    });
                } else {
                    assert!(client.is_null(), "client_out written on {rc}");
                }
            }
            Op::Invoke {
                args,
                null_response_out,
            } => {
                let (client, shut_down) = st.client(args.client);
                let (_m, method) = method_of(&args.method);
                let (req, len, bytes) = request(&args.request);
                let mut response = gf_bytes {
                    data: ptr::null_mut(),
                    len: 0,
                };
                let mut error: *mut c_char = ptr::null_mut();
                let out = out_ptr(&mut response, *null_response_out);
                let error_out = out_ptr(&mut error, args.null_error_out);
                let timeout = 1 + u32::from(args.timeout_ms % 50);
                let rc = gf_invoke(client, method, req, len, timeout, out, error_out);
                check_status("gf_invoke", rc, error, !args.null_error_out);
                check_args(
                    "gf_invoke",
                    rc,
                    client,
                    shut_down,
                    args,
                    req.is_null() && len > 0,
                );
                if *null_response_out {
                    assert_eq!(rc, GF_INVALID_ARGUMENT);
                } else if rc == 0 {
                    if is_echo(&args.method) {
                        let got: &[u8] = if response.len == 0 {
                            &[]
                        } else {
                            std::slice::from_raw_parts(response.data, response.len)
                        };
                        assert_eq!(got, bytes.as_slice(), "echo");
                    }
                    gf_bytes_free(&mut response);
                } else {
                    assert!(response.data.is_null() && response.len == 0);
                }
            }
            Op::InvokeEx {
                args,
                options,
                null_result_out,
            } => {
                let (client, shut_down) = st.client(args.client);
                let (_m, method) = method_of(&args.method);
                let (req, len, _bytes) = request(&args.request);
                let o = call_options(options);
                let mut result: *mut gf_result = ptr::null_mut();
                let mut error: *mut c_char = ptr::null_mut();
                let out = out_ptr(&mut result, *null_result_out);
                let error_out = out_ptr(&mut error, args.null_error_out);
                if o.is_null() {
                    // Without options there is no deadline: only calls that fail at once.
                    if !(client.is_null() || shut_down) {
                        return;
                    }
                }
                let rc = gf_invoke_ex(client, method, req, len, o, out, error_out);
                gf_call_options_free(o);
                check_status("gf_invoke_ex", rc, error, !args.null_error_out);
                check_args(
                    "gf_invoke_ex",
                    rc,
                    client,
                    shut_down,
                    args,
                    req.is_null() && len > 0,
                );
                if !result.is_null() {
                    check_result(result);
                    gf_result_free(result);
                }
            }
            Op::InvokeAsync {
                args,
                keep_call,
                null_callback,
            } => {
                let (client, shut_down) = st.client(args.client);
                let (_m, method) = method_of(&args.method);
                let (req, len, _bytes) = request(&args.request);
                let mut call: *mut gf_call = ptr::null_mut();
                let mut error: *mut c_char = ptr::null_mut();
                let call_out = out_ptr(&mut call, !*keep_call);
                let error_out = out_ptr(&mut error, args.null_error_out);
                let callback: gf_callback = if *null_callback { None } else { Some(on_done) };
                let timeout = u32::from(args.timeout_ms % 50);
                let rc = gf_invoke_async(
                    client, method, req, len, timeout, callback, counter, call_out, error_out,
                );
                check_status("gf_invoke_async", rc, error, !args.null_error_out);
                check_args(
                    "gf_invoke_async",
                    rc,
                    client,
                    shut_down,
                    args,
                    req.is_null() && len > 0,
                );
                if *null_callback {
                    assert_eq!(rc, GF_INVALID_ARGUMENT);
                }
                accepted(st, rc, call);
            }
            Op::InvokeAsyncEx {
                args,
                options,
                keep_call,
            } => {
                let (client, shut_down) = st.client(args.client);
                let (_m, method) = method_of(&args.method);
                let (req, len, _bytes) = request(&args.request);
                let o = call_options(options);
                let mut call: *mut gf_call = ptr::null_mut();
                let mut error: *mut c_char = ptr::null_mut();
                let call_out = out_ptr(&mut call, !*keep_call);
                let error_out = out_ptr(&mut error, args.null_error_out);
                let rc = gf_invoke_async_ex(
                    client,
                    method,
                    req,
                    len,
                    o,
                    Some(on_result),
                    counter,
                    call_out,
                    error_out,
                );
                // The options are copied: free them before the call ends.
                gf_call_options_free(o);
                check_status("gf_invoke_async_ex", rc, error, !args.null_error_out);
                check_args(
                    "gf_invoke_async_ex",
                    rc,
                    client,
                    shut_down,
                    args,
                    req.is_null() && len > 0,
                );
                accepted(st, rc, call);
            }
            Op::NewQueue => {
                if st.queues.len() >= 3 {
                    return;
                }
                let mut q: *mut gf_queue = ptr::null_mut();
                let mut error: *mut c_char = ptr::null_mut();
                let rc = gf_queue_new(&mut q, &mut error);
                check_status("gf_queue_new", rc, error, true);
                if rc == 0 {
                    st.queues.push(Queue {
                        handle: q,
                        given: 0,
                        taken: 0,
                    });
                }
            }
            Op::InvokeQueued {
                args,
                queue,
                null_queue,
                keep_call,
                tag,
            } => {
                let (client, shut_down) = st.client(args.client);
                let qi = usize::from(*queue);
                let q = match st.queues.get(qi) {
                    Some(q) if !*null_queue => q.handle,
                    _ => ptr::null_mut(),
                };
                let (_m, method) = method_of(&args.method);
                let (req, len, _bytes) = request(&args.request);
                let mut call: *mut gf_call = ptr::null_mut();
                let mut error: *mut c_char = ptr::null_mut();
                let call_out = out_ptr(&mut call, !*keep_call);
                let error_out = out_ptr(&mut error, args.null_error_out);
                let timeout = 1 + u32::from(args.timeout_ms % 50);
                let rc = gf_invoke_queued(
                    client, method, req, len, timeout, q, *tag, call_out, error_out,
                );
                check_status("gf_invoke_queued", rc, error, !args.null_error_out);
                check_args(
                    "gf_invoke_queued",
                    rc,
                    client,
                    shut_down,
                    args,
                    req.is_null() && len > 0,
                );
                if q.is_null() {
                    assert_eq!(rc, GF_INVALID_ARGUMENT);
                }
                if rc == 0 {
                    st.queues[qi].given += 1;
                    if !call.is_null() {
                        st.calls.push(call);
                    }
                } else {
                    assert!(call.is_null());
                }
            }
            Op::Poll { queue, max } => {
                let Some(q) = st.queues.get_mut(usize::from(*queue)) else {
                    assert_eq!(gf_queue_poll(ptr::null_mut(), ptr::null_mut(), 1), 0);
                    return;
                };
                let max = usize::from(*max % 8);
                let mut out = completions(max);
                let n = gf_queue_poll(q.handle, out.as_mut_ptr(), max);
                assert!(n <= max);
                take(q, &out[..n]);
            }
            Op::Wait { queue, max } => {
                let Some(q) = st.queues.get_mut(usize::from(*queue)) else {
                    return;
                };
                let max = usize::from(*max % 8);
                let mut out = completions(max.max(1));
                let mut taken = usize::MAX;
                let mut error: *mut c_char = ptr::null_mut();
                // Blocks until an outcome arrives: only while one is due (queued calls all have
                // a deadline).
                if max > 0 && q.given == q.taken {
                    return;
                }
                let rc = gf_queue_wait(q.handle, out.as_mut_ptr(), max, &mut taken, &mut error);
                check_status("gf_queue_wait", rc, error, true);
                if max == 0 {
                    assert_eq!(rc, GF_INVALID_ARGUMENT);
                    assert_eq!(taken, usize::MAX, "taken_out written on an error");
                } else {
                    assert_eq!(rc, 0);
                    assert!((1..=max).contains(&taken));
                    take(q, &out[..taken]);
                }
            }
            Op::Cancel { call } => {
                gf_call_cancel(
                    st.calls
                        .get(usize::from(*call))
                        .copied()
                        .unwrap_or(ptr::null_mut()),
                );
            }
            Op::FreeCall { call } => {
                let i = usize::from(*call);
                if i < st.calls.len() {
                    gf_call_free(st.calls.swap_remove(i));
                } else {
                    gf_call_free(ptr::null_mut());
                }
            }
            Op::Stats { client } => {
                let (c, shut_down) = st.client(*client);
                let mut json: *mut c_char = ptr::null_mut();
                let mut error: *mut c_char = ptr::null_mut();
                let rc = gf_client_stats(c, &mut json, &mut error);
                check_status("gf_client_stats", rc, error, true);
                if c.is_null() {
                    assert_eq!(rc, GF_INVALID_ARGUMENT);
                } else if shut_down {
                    assert_eq!(rc, GF_FAILED_PRECONDITION);
                }
                if rc == 0 {
                    let text = CStr::from_ptr(json).to_str().expect("UTF-8 stats");
                    serde_json::from_str::<serde_json::Value>(text).expect("stats are JSON");
                    gf_string_free(json);
                }
            }
            Op::Shutdown { client } => {
                let i = usize::from(*client);
                match st.clients.get_mut(i) {
                    Some(c) => {
                        gf_client_shutdown(c.handle);
                        c.shut_down = true;
                    }
                    None => gf_client_shutdown(ptr::null_mut()),
                }
            }
            Op::Close { client } => {
                let i = usize::from(*client);
                if i < st.clients.len() {
                    gf_close(st.clients.swap_remove(i).handle);
                } else {
                    gf_close(ptr::null_mut());
                }
            }
            Op::Sleep { ms } => std::thread::sleep(Duration::from_millis(u64::from(ms % 4))),
        }
    }
}

fn accepted(st: &mut State, rc: i32, call: *mut gf_call) {
    if rc == 0 {
        st.callbacks_expected += 1;
        if !call.is_null() {
            st.calls.push(call);
        }
    } else {
        assert!(call.is_null(), "call_out written on {rc}");
    }
}

/// `place` as an out-parameter, or NULL when the input asks for NULL there.
fn out_ptr<T>(place: &mut T, null: bool) -> *mut T {
    if null {
        ptr::null_mut()
    } else {
        place
    }
}

/// Room for `n` outcomes of `gf_queue_poll` or `gf_queue_wait`.
fn completions(n: usize) -> Vec<gf_completion> {
    let empty = || gf_completion {
        tag: 0,
        result: ptr::null_mut(),
    };
    std::iter::repeat_with(empty).take(n).collect()
}

fn take(q: &mut Queue, outcomes: &[gf_completion]) {
    for c in outcomes {
        check_result(c.result);
        gf_result_free(c.result);
    }
    q.taken += outcomes.len() as u64;
    assert!(
        q.taken <= q.given,
        "a queue handed out more outcomes than calls"
    );
}

/// Closes what is left, then waits for every accepted async call's one callback.
fn finish(st: State) {
    for c in &st.clients {
        gf_close(c.handle);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while CALLBACKS.load(Ordering::SeqCst) < st.callbacks_expected {
        assert!(
            Instant::now() < deadline,
            "{} of {} callbacks after 20 s",
            CALLBACKS.load(Ordering::SeqCst),
            st.callbacks_expected
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    for q in &st.queues {
        gf_queue_free(q.handle);
    }
    for call in &st.calls {
        gf_call_free(*call);
    }
    // A late second callback would show here or in the next input's count.
    assert_eq!(
        CALLBACKS.load(Ordering::SeqCst),
        st.callbacks_expected,
        "a callback ran twice"
    );
}
