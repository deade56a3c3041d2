//! The registrar: puts `<prefix>/<addr>` with a lease and keeps the lease alive in the
//! background. The record is written once, and again only when the lease was lost (expired
//! during an outage, etcd restarted); keepalives are the only steady-state traffic.

use std::time::Duration;

use etcd_client::{Client, PutOptions};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::encode_record;
use crate::backoff::Backoff;
use crate::config::EtcdOptions;
use crate::status::Status;
use crate::target::validate_addr;

/// A live registration. Dropping it without [`Registration::deregister`] stops the keepalives
/// and leaves the lease to expire.
pub struct Registration {
    key: String,
    client: Client,
    lease: tokio::sync::watch::Receiver<i64>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Registration {
    /// Registers `addr` under `prefix` with a lease of `ttl` seconds. Returns once the record is
    /// in etcd, or with 14 UNAVAILABLE when etcd cannot be reached within its dial timeout.
    pub async fn register(
        opts: &EtcdOptions,
        prefix: &str,
        addr: &str,
        metadata: Value,
        ttl: u32,
    ) -> Result<Registration, Status> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(Status::invalid_argument("prefix: must not be empty"));
        }
        validate_addr(addr).map_err(|e| Status::invalid_argument(format!("addr: {e}")))?;
        if ttl == 0 {
            return Err(Status::invalid_argument("ttl_s: must be at least 1 second"));
        }
        let key = format!("{prefix}/{addr}");
        let value = encode_record(addr, &metadata);
        let tls = crate::client::load_tls(opts.tls.as_ref(), "etcd.tls")?;
        let mut client = super::etcd::connect(opts, tls.as_deref())
            .await
            .map_err(Status::unavailable)?;
        let timeout = opts.dial_timeout.max(Duration::from_secs(1));
        let lease = tokio::time::timeout(timeout, put_with_lease(&mut client, &key, &value, ttl))
            .await
            .map_err(|_| {
                Status::unavailable(format!("etcd: no answer within {} ms", timeout.as_millis()))
            })?
            .map_err(Status::unavailable)?;
        let (lease_tx, lease_rx) = tokio::sync::watch::channel(lease);
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_alive(
            client.clone(),
            key.clone(),
            value,
            ttl,
            lease_tx,
            stop.clone(),
        ));
        Ok(Registration {
            key,
            client,
            lease: lease_rx,
            stop,
            task: Some(task),
        })
    }

    /// The etcd key of this registration.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease currently holding the key.
    pub fn lease_id(&self) -> i64 {
        *self.lease.borrow()
    }

    /// Stops the keepalives, deletes the key and revokes the lease.
    pub async fn deregister(mut self) -> Result<(), Status> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let lease = *self.lease.borrow();
        let mut client = self.client.clone();
        let key = self.key.clone();
        let work = async move {
            client.delete(key.as_str(), None).await?;
            client.lease_revoke(lease).await.map(|_| ())
        };
        super::etcd::within(
            &format!("deregister {}", self.key),
            Duration::from_secs(5),
            work,
        )
        .await
        .map_err(Status::unavailable)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn put_with_lease(
    client: &mut Client,
    key: &str,
    value: &str,
    ttl: u32,
) -> Result<i64, String> {
    let lease = client
        .lease_grant(ttl as i64, None)
        .await
        .map_err(|e| format!("etcd lease grant: {e}"))?
        .id();
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await
        .map_err(|e| format!("etcd put {key:?}: {e}"))?;
    Ok(lease)
}

/// Keeps the lease alive (one keepalive every ttl/3). When etcd says the lease is gone, grants a
/// new one and puts the record again.
async fn keep_alive(
    mut client: Client,
    key: String,
    value: String,
    ttl: u32,
    lease_tx: tokio::sync::watch::Sender<i64>,
    stop: CancellationToken,
) {
    let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        1.6,
        0.2,
        period.max(Duration::from_millis(500)),
    );
    let mut lease = *lease_tx.borrow();
    let mut need_put = false;
    loop {
        let round = async {
            if need_put {
                lease = put_with_lease(&mut client, &key, &value, ttl).await?;
                lease_tx.send_replace(lease);
                log::info!(
                    "registrar: lease for {key:?} was lost; registered again with lease {lease:x}"
                );
                need_put = false;
            }
            // etcd-client sends the first keepalive itself and reports a lease etcd no longer
            // has (TTL 0) as LeaseKeepAliveError: the lease is gone, as below.
            let (mut keeper, mut responses) = match client.lease_keep_alive(lease).await {
                Ok(opened) => opened,
                Err(e) => {
                    need_put = matches!(e, etcd_client::Error::LeaseKeepAliveError(_));
                    return Err(format!("etcd keepalive {key:?}: {e}"));
                }
            };
            loop {
                keeper
                    .keep_alive()
                    .await
                    .map_err(|e| format!("etcd keepalive {key:?}: {e}"))?;
                let answer =
                    tokio::time::timeout(period.max(Duration::from_secs(1)), responses.message())
                        .await;
                match answer {
                    Ok(Ok(Some(resp))) if resp.ttl() > 0 => backoff.reset(),
                    Ok(Ok(Some(_))) => {
                        need_put = true;
                        return Err::<(), String>(format!("etcd lease for {key:?} expired"));
                    }
                    Ok(Ok(None)) => return Err(format!("etcd keepalive {key:?}: stream ended")),
                    Ok(Err(e)) => return Err(format!("etcd keepalive {key:?}: {e}")),
                    Err(_) => return Err(format!("etcd keepalive {key:?}: no answer")),
                }
                tokio::time::sleep(period).await;
            }
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = round => r,
        };
        if let Err(e) = result {
            log::warn!("registrar: {e}");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(if need_put { Duration::ZERO } else { backoff.next_delay() }) => {}
        }
    }
}
