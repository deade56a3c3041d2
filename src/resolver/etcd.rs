//! The etcd resolver: a prefix Get, then a Watch from the Get's revision + 1, re-listed and
//! re-watched with backoff whenever the watch ends (compaction, a lost connection, a member
//! without a leader). Watches carry etcd's require-leader flag so a partitioned member cannot
//! keep the client on a silent, stale watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use tokio_util::sync::CancellationToken;

use super::{decode_record, Endpoint, ResolverSink};
use crate::config::EtcdOptions;
use crate::retry::backoff::Backoff;

/// Connects an etcd client. Lazy for plain connections; with a username it logs in, which needs
/// a reachable member.
pub async fn connect(opts: &EtcdOptions) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(opts.dial_timeout)
        .with_keep_alive(
            Duration::from_secs(2),
            opts.dial_timeout.max(Duration::from_secs(1)),
        )
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&opts.username, &opts.password) {
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    let connecting = Client::connect(opts.endpoints.clone(), Some(options));
    match tokio::time::timeout(opts.dial_timeout, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("etcd {}: {e}", opts.endpoints.join(","))),
        Err(_) => Err(format!(
            "etcd {}: no answer within {} ms",
            opts.endpoints.join(","),
            opts.dial_timeout.as_millis()
        )),
    }
}

/// Follows `<prefix>/` in etcd until `stop` is cancelled, feeding every change to `sink`.
pub async fn watch_prefix(
    opts: EtcdOptions,
    prefix: String,
    sink: Arc<dyn ResolverSink>,
    stop: CancellationToken,
) {
    let key_prefix = format!("{prefix}/");
    let mut backoff = Backoff::new(Duration::from_millis(100), 1.6, 0.2, Duration::from_secs(5));
    let mut client: Option<Client> = None;
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = follow_once(&opts, &key_prefix, &mut client, &*sink, &mut backoff) => r,
        };
        if let Err(e) = result {
            log::warn!("etcd resolver for {prefix:?}: {e}; retrying");
            sink.error(e);
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One list-then-watch cycle. Returns when the watch ends, with the reason as the error.
async fn follow_once(
    opts: &EtcdOptions,
    key_prefix: &str,
    client: &mut Option<Client>,
    sink: &dyn ResolverSink,
    backoff: &mut Backoff,
) -> Result<(), String> {
    if client.is_none() {
        *client = Some(connect(opts).await?);
    }
    let c = client.as_mut().expect("connected above");
    let request_timeout = opts.dial_timeout.max(Duration::from_secs(1));
    let list = tokio::time::timeout(
        request_timeout,
        c.get(key_prefix, Some(GetOptions::new().with_prefix())),
    );
    let resp = match list.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err(format!("etcd get {key_prefix:?}: {e}")),
        Err(_) => {
            return Err(format!(
                "etcd get {key_prefix:?}: no answer within {} ms",
                request_timeout.as_millis()
            ))
        }
    };
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let mut instances: BTreeMap<Vec<u8>, Endpoint> = BTreeMap::new();
    for kv in resp.kvs() {
        if let Some(e) = decode(kv.key(), kv.value()) {
            instances.insert(kv.key().to_vec(), e);
        }
    }
    sink.update(dedup(&instances));

    let watch_opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream =
        match tokio::time::timeout(request_timeout, c.watch(key_prefix, Some(watch_opts))).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(format!("etcd watch {key_prefix:?}: {e}")),
            Err(_) => {
                return Err(format!(
                    "etcd watch {key_prefix:?}: no answer within {} ms",
                    request_timeout.as_millis()
                ))
            }
        };
    loop {
        let msg = match stream.message().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(format!("etcd watch {key_prefix:?}: stream ended")),
            Err(e) => return Err(format!("etcd watch {key_prefix:?}: {e}")),
        };
        if msg.canceled() {
            let why = if msg.compact_revision() > 0 {
                format!("compacted at revision {}", msg.compact_revision())
            } else {
                msg.cancel_reason().to_string()
            };
            return Err(format!("etcd watch {key_prefix:?} cancelled: {why}"));
        }
        if msg.created() && msg.events().is_empty() {
            backoff.reset();
            continue;
        }
        let mut changed = false;
        for event in msg.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => match decode(kv.key(), kv.value()) {
                    Some(e) => {
                        changed |=
                            instances.insert(kv.key().to_vec(), e.clone()).as_ref() != Some(&e)
                    }
                    None => changed |= instances.remove(kv.key()).is_some(),
                },
                EventType::Delete => changed |= instances.remove(kv.key()).is_some(),
            }
        }
        if changed {
            sink.update(dedup(&instances));
        }
    }
}

fn decode(key: &[u8], value: &[u8]) -> Option<Endpoint> {
    let key = String::from_utf8_lossy(key);
    match decode_record(&key, value) {
        Ok(e) => Some(e),
        Err(why) => {
            log::warn!("skipping instance record: {why}");
            None
        }
    }
}

/// One endpoint per address (two keys may name the same address; the first key wins).
fn dedup(instances: &BTreeMap<Vec<u8>, Endpoint>) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::with_capacity(instances.len());
    for e in instances.values() {
        if !out.iter().any(|o| o.addr == e.addr) {
            out.push(e.clone());
        }
    }
    out
}
