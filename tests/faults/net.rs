//! Misbehaving peers on loopback: a black hole that accepts TCP and never speaks, and a proxy
//! that resets its connections mid-stream.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Accepts connections and holds them open without reading or writing a byte: a host whose
/// kernel is up while the server process is wedged.
pub struct BlackHole {
    pub addr: String,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        held.push(sock);
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BlackHole {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP proxy to `upstream` that aborts every connection through it (RST, SO_LINGER 0, on
/// both sides) once per `period`: calls in flight on it lose their connection mid-call.
pub struct ResetProxy {
    pub addr: String,
    resets: Arc<AtomicU64>,
    stop: CancellationToken,
    rt: Option<tokio::runtime::Runtime>,
}

impl ResetProxy {
    pub fn start(upstream: &str, period: Duration) -> ResetProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let resets = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (tick, _) = tokio::sync::watch::channel(0u64);
        let tick = Arc::new(tick);
        let t = tick.clone();
        let st = stop.clone();
        rt.spawn(async move {
            loop {
                tokio::select! {
                    _ = st.cancelled() => return,
                    _ = tokio::time::sleep(period) => t.send_modify(|n| *n += 1),
                }
            }
        });
        let upstream = upstream.to_string();
        let (r, st) = (resets.clone(), stop.clone());
        rt.spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = st.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((c, _)) => c,
                        Err(_) => continue,
                    },
                };
                let mut tick = tick.subscribe();
                tick.borrow_and_update();
                let (upstream, resets, st) = (upstream.clone(), r.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let mut client = client;
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let reset = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        _ = tick.changed() => true,
                        _ = st.cancelled() => false,
                    };
                    if reset {
                        let _ = client.set_zero_linger();
                        let _ = server.set_zero_linger();
                        resets.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        ResetProxy {
            addr,
            resets,
            stop,
            rt: Some(rt),
        }
    }

    /// Connections aborted so far.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }
}

impl Drop for ResetProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
