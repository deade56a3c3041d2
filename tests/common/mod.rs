//! Test harness: real gf-testserver processes and real etcd processes on free loopback ports,
//! started by the tests and stopped by PID.

#![allow(dead_code)]

pub mod certs;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use grpc_failover::{CallOptions, Client, Options};

pub fn testserver_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gf-testserver")
}

/// A gf-testserver child process.
pub struct TestServer {
    pub addr: String,
    /// Every address it listens on: `addr` alone, or `--ports N` of them (`addr` first).
    pub addrs: Vec<String>,
    pub name: String,
    args: Vec<String>,
    child: Option<Child>,
}

impl TestServer {
    /// Starts `gf-testserver --name NAME --listen 127.0.0.1:0 ARGS...` and waits for its
    /// `listening <addr>` line.
    pub fn start(name: &str, args: &[&str]) -> TestServer {
        Self::start_on(name, "127.0.0.1:0", args)
    }

    pub fn start_on(name: &str, listen: &str, args: &[&str]) -> TestServer {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, addrs) = spawn_server(name, listen, &args);
        TestServer {
            addr: addrs[0].clone(),
            addrs,
            name: name.to_string(),
            args,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL: the process dies without deregistering.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the server drains (deregisters when it registered itself, GOAWAY,
    /// finishes its calls). Returns how it exited (None when it was not running).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        signal(c.id(), libc::SIGTERM);
        c.wait().ok()
    }

    /// A graceful restart: SIGTERM, wait for the drain to end, start again on the same address
    /// with the same flags. Returns how the old process exited.
    pub fn restart_gracefully(&mut self) -> Option<ExitStatus> {
        let status = self.terminate();
        self.respawn();
        status
    }

    /// SIGSTOP: the process keeps its sockets open but answers nothing (a hung host).
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGSTOP);
        }
    }

    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGCONT);
        }
    }

    /// Starts again on the same address with the same flags.
    pub fn restart(&mut self) {
        self.kill();
        self.respawn();
    }

    fn respawn(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port can stay busy for a moment after the old process is gone.
            if TcpListener::bind(&self.addr).is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (child, addrs) = spawn_server(&self.name, &self.addr, &self.args);
        assert_eq!(addrs[0], self.addr);
        self.child = Some(child);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_server(name: &str, listen: &str, args: &[String]) -> (Child, Vec<String>) {
    let ports: usize = args
        .iter()
        .position(|a| a == "--ports")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1);
    let mut child = Command::new(testserver_bin())
        .args(["--name", name, "--listen", listen])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start gf-testserver");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut addrs = Vec::with_capacity(ports);
    for _ in 0..ports {
        let line = lines
            .next()
            .expect("gf-testserver printed nothing")
            .expect("read stdout");
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        addrs.push(addr.to_string());
    }
    // A server that registers itself prints "registered <key>" once the key is in etcd: wait for
    // it, so a test sees the key at once (the registration runs after the listener is up).
    if args.iter().any(|a| a == "--etcd") {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            line.starts_with("registered "),
            "gf-testserver {name} did not register (printed {line:?})"
        );
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addrs)
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a child process we started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// A loopback port nothing listens on now, for a process the test starts next (etcd's client
/// and peer ports). Picked below Linux's ephemeral range (32768 and up), where the kernel never
/// hands out ports by itself: a port from `bind(:0)` could be given again to a gf-testserver
/// binding port 0 in a parallel test before etcd binds it. Never the same port twice in one
/// test process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..10_000 {
        let port = 20_000 + fastrand::u16(..12_000);
        if !handed.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in 20000..32000");
}

/// An etcd member (or a single-node cluster) in a temporary data directory.
pub struct Etcd {
    pub client_url: String,
    pub endpoint: String,
    pub name: String,
    peer_url: String,
    cluster: String,
    state: &'static str,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// etcdctl's TLS flags for a member that serves TLS.
    ctl_tls: Vec<String>,
    child: Option<Child>,
}

impl Etcd {
    /// A single-node etcd on free loopback ports.
    pub fn start() -> Etcd {
        let mut c = Self::cluster(1);
        c.pop().expect("one member")
    }

    /// A single-node etcd whose ports are chosen but which is not running yet: a registry
    /// that is unreachable until [`Etcd::launch`].
    pub fn not_started() -> Etcd {
        Self::members(1).pop().expect("one member")
    }

    /// Starts a member made by [`Etcd::not_started`] and waits until it is healthy.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "etcd {} is running", self.endpoint);
        self.spawn();
        self.wait_healthy(Duration::from_secs(30));
    }

    /// A single-node etcd serving clients over TLS with the test CA's server certificate; with
    /// `client_cert_auth` it also requires client certificates from that CA (mTLS).
    pub fn start_tls(certs: &certs::Certs, client_cert_auth: bool) -> Etcd {
        let mut m = Self::members(1).pop().expect("one member");
        m.client_url = m.client_url.replace("http://", "https://");
        m.extra = vec![
            "--cert-file".into(),
            certs.server.cert.clone(),
            "--key-file".into(),
            certs.server.key.clone(),
        ];
        // This etcd (3.4) requires client certificates whenever it has a trusted CA.
        if client_cert_auth {
            m.extra.extend([
                "--trusted-ca-file".into(),
                certs.ca.clone(),
                "--client-cert-auth".into(),
            ]);
        }
        m.ctl_tls = vec![
            "--cacert".into(),
            certs.ca.clone(),
            "--cert".into(),
            certs.client.cert.clone(),
            "--key".into(),
            certs.client.key.clone(),
        ];
        m.launch();
        m
    }

    /// A cluster of `n` members on loopback, all started and healthy.
    pub fn cluster(n: usize) -> Vec<Etcd> {
        let mut out = Self::members(n);
        for m in out.iter_mut() {
            m.spawn();
        }
        for m in out.iter() {
            m.wait_healthy(Duration::from_secs(30));
        }
        out
    }

    fn members(n: usize) -> Vec<Etcd> {
        let members: Vec<(String, u16, u16)> = (0..n)
            .map(|i| (format!("m{i}"), free_port(), free_port()))
            .collect();
        let cluster = members
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        members
            .into_iter()
            .map(|(name, client, peer)| Etcd {
                client_url: format!("http://127.0.0.1:{client}"),
                endpoint: format!("127.0.0.1:{client}"),
                name,
                peer_url: format!("http://127.0.0.1:{peer}"),
                cluster: cluster.clone(),
                state: "new",
                dir: tempfile::tempdir().expect("tempdir"),
                extra: Vec::new(),
                ctl_tls: Vec::new(),
                child: None,
            })
            .collect()
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let child = Command::new("etcd")
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &self.client_url,
                "--advertise-client-urls",
                &self.client_url,
            ])
            .args([
                "--listen-peer-urls",
                &self.peer_url,
                "--initial-advertise-peer-urls",
                &self.peer_url,
            ])
            .args([
                "--initial-cluster",
                &self.cluster,
                "--initial-cluster-state",
                self.state,
            ])
            .args(["--initial-cluster-token", "gf-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (is etcd-server installed? run `make deps`)");
        self.child = Some(child);
        self.state = "existing";
    }

    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.ctl(&["endpoint", "health"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd {} did not become healthy", self.endpoint);
    }

    /// Runs etcdctl against this member; Ok(stdout) when it exits 0.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.endpoint,
                "--dial-timeout",
                "2s",
                "--command-timeout",
                "3s",
            ])
            .args(&self.ctl_tls)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// etcdctl, retried for a while: a cluster may be electing a leader right after a member
    /// was killed or resumed.
    pub fn ctl_retry(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.ctl(args) {
                Ok(out) => return out,
                Err(e) if Instant::now() > deadline => panic!("etcdctl {args:?}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Whether this member is the cluster's leader now.
    pub fn is_leader(&self) -> bool {
        let Ok(out) = self.ctl(&["endpoint", "status", "-w", "json"]) else {
            return false;
        };
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let status = &v[0]["Status"];
        !status["leader"].is_null() && status["leader"] == status["header"]["member_id"]
    }

    /// Compacts the whole history up to the current revision; returns that revision.
    pub fn compact(&self) -> i64 {
        let out = self.ctl_retry(&["put", "gf-test/compact-mark", "x", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl put -w json");
        let revision = v["header"]["revision"].as_i64().expect("a revision");
        self.ctl_retry(&["compact", &revision.to_string()]);
        revision
    }

    pub fn put(&self, key: &str, value: &str) {
        self.ctl_retry(&["put", key, value]);
    }

    pub fn delete(&self, key: &str) {
        self.ctl_retry(&["del", key]);
    }

    /// Keys under a prefix.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.ctl(&["get", "--prefix", "--keys-only", prefix])
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.ctl(&["get", "--print-value-only", key]).ok()?;
        let v = out.trim_end_matches('\n');
        (!v.is_empty()).then(|| v.to_string())
    }

    /// A Go-format instance record.
    /// Registers every one of `addrs` under `prefix` with weight 1, 100 puts per transaction
    /// (etcd allows 128 operations in one), through a client of its own.
    pub fn put_instances(&self, prefix: &str, addrs: &[String]) {
        let mut kv = block_on(etcd_client::Client::connect([self.endpoint.clone()], None)).unwrap();
        for chunk in addrs.chunks(100) {
            let ops: Vec<etcd_client::TxnOp> = chunk
                .iter()
                .map(|a| {
                    etcd_client::TxnOp::put(
                        format!("{prefix}/{a}"),
                        format!(r#"{{"Op":0,"Addr":"{a}","Metadata":{{"weight":1}}}}"#),
                        None,
                    )
                })
                .collect();
            block_on(kv.txn(etcd_client::Txn::new().and_then(ops))).unwrap();
        }
    }

    pub fn put_instance(&self, prefix: &str, addr: &str, weight: f64) {
        self.put(
            &format!("{prefix}/{addr}"),
            &format!("{{\"Op\":0,\"Addr\":\"{addr}\",\"Metadata\":{{\"weight\":{weight}}}}}"),
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the member again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_healthy(Duration::from_secs(30));
    }

    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGSTOP);
        }
    }

    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGCONT);
        }
    }

    pub fn options_json(endpoints: &[&Etcd], service_config: &str) -> String {
        let eps: Vec<String> = endpoints
            .iter()
            .map(|e| format!("\"{}\"", e.endpoint))
            .collect();
        format!(
            "{{\"etcd\": {{\"endpoints\": [{}], \"dial_timeout_ms\": 1000}}, \"service_config\": {service_config}, \"connect_backoff\": {{\"base_delay_ms\": 100, \"max_delay_ms\": 1000}}}}",
            eps.join(",")
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Options from JSON, panicking on error.
pub fn options(json: &str) -> Options {
    Options::from_json(Some(json)).unwrap_or_else(|e| panic!("options: {e}"))
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    grpc_failover::runtime_handle().block_on(f)
}

/// Calls `/test.Svc/Whoami` and returns the server name, or the error.
pub fn whoami(c: &Client, timeout_ms: u64) -> Result<String, grpc_failover::Status> {
    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
    let opts = CallOptions {
        timeout,
        ..Default::default()
    };
    block_on(c.invoke("/test.Svc/Whoami", bytes::Bytes::new(), &opts))
        .map(|b| String::from_utf8_lossy(&b).to_string())
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counts Whoami answers per server name over `n` calls (errors counted under "error").
pub fn spread(c: &Client, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let who = whoami(c, 2000).unwrap_or_else(|_| "error".to_string());
        *counts.entry(who).or_insert(0) += 1;
    }
    counts
}

/// The per-instance entries of `Client::stats()`.
pub fn instances(c: &Client) -> Vec<serde_json::Value> {
    c.stats()["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `Client::stats()` entry of the instance at `addr` (Null when there is none).
pub fn instance(c: &Client, addr: &str) -> serde_json::Value {
    instances(c)
        .into_iter()
        .find(|i| i["address"] == addr)
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until exactly `n` instances are READY; returns whether that happened within `timeout`.
pub fn wait_ready(c: &Client, n: usize, timeout: Duration) -> bool {
    eventually(timeout, || {
        instances(c)
            .iter()
            .filter(|i| i["state"] == "READY")
            .count()
            == n
    })
}
