//! The shared level of the cache: Redis, and invalidation of every replica over Redis
//! pub/sub.
//!
//! Redis is only ever a copy: a miss, an error or a timeout falls through to the database,
//! so a replica keeps serving while Redis is down (and says so in its health status), and
//! picks Redis up again on its own. Every operation is bounded by [`OP_TIMEOUT`].
//!
//! A change deletes the Redis key, publishes an invalidation that every replica applies to
//! its moka cache, and deletes the key once more after [`SECOND_DELETE`]: a replica that read
//! the database just before the change committed may have written the old value back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::Caches;

/// Longest any Redis call may take before the cache treats it as a miss.
pub const OP_TIMEOUT: Duration = Duration::from_millis(50);
/// Delay of the second delete after a change.
pub const SECOND_DELETE: Duration = Duration::from_millis(500);
/// Longest pause between reconnection attempts.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// Key prefix of every value prorata keeps in Redis (versioned with the value format).
pub const PREFIX: &str = "prorata:v1:";

/// An invalidation broadcast to every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// One promoter changed.
    Promoter(String),
    /// One customer binding changed.
    Binding(String),
    /// Everything in the network may have changed (bulk import).
    Network,
    /// A rule-set version was published.
    Catalog,
}

impl Invalidation {
    fn encode(&self) -> String {
        match self {
            Invalidation::Promoter(id) => format!("p:{id}"),
            Invalidation::Binding(c) => format!("b:{c}"),
            Invalidation::Network => "n".into(),
            Invalidation::Catalog => "r".into(),
        }
    }

    fn decode(s: &str) -> Option<Invalidation> {
        match s.split_once(':') {
            Some(("p", id)) => Some(Invalidation::Promoter(id.into())),
            Some(("b", c)) => Some(Invalidation::Binding(c.into())),
            _ if s == "n" => Some(Invalidation::Network),
            _ if s == "r" => Some(Invalidation::Catalog),
            _ => None,
        }
    }

    /// The Redis key holding the value it invalidates, if any.
    fn key(&self) -> Option<String> {
        match self {
            Invalidation::Promoter(id) => Some(promoter_key(id)),
            Invalidation::Binding(c) => Some(binding_key(c)),
            _ => None,
        }
    }
}

/// Redis key of a promoter.
pub fn promoter_key(id: &str) -> String {
    format!("{PREFIX}promoter:{id}")
}

/// Redis key of a binding.
pub fn binding_key(customer: &str) -> String {
    format!("{PREFIX}binding:{customer}")
}

/// The Redis connection of one process.
pub struct Shared {
    client: redis::Client,
    conn: RwLock<Option<ConnectionManager>>,
    channel: String,
    ttl_secs: u64,
    healthy: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("healthy", &self.healthy())
            .finish()
    }
}

impl Shared {
    /// A client for `url`; connects in the background (see [`Shared::spawn`]).
    pub fn new(url: &str, ttl: Duration) -> redis::RedisResult<Arc<Shared>> {
        Ok(Arc::new(Shared {
            client: redis::Client::open(url)?,
            conn: RwLock::new(None),
            channel: format!("{PREFIX}invalidate"),
            ttl_secs: ttl.as_secs().max(1),
            healthy: AtomicBool::new(false),
        }))
    }

    /// True while Redis answers.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn set_healthy(&self, up: bool) {
        if self.healthy.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("Redis is reachable: shared cache on");
            } else {
                tracing::warn!(
                    "Redis is unreachable: serving from the local cache and the database"
                );
            }
        }
    }

    fn conn(&self) -> Option<ConnectionManager> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(OP_TIMEOUT, f).await {
            Ok(Ok(v)) => {
                self.set_healthy(true);
                Some(v)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Redis call failed");
                self.set_healthy(false);
                None
            }
            Err(_) => {
                self.set_healthy(false);
                None
            }
        }
    }

    /// A cached JSON value; `None` on a miss or any failure.
    pub async fn get(&self, key: &str) -> Option<String> {
        let mut c = self.conn()?;
        self.bounded(async move { c.get::<_, Option<String>>(key).await })
            .await
            .flatten()
    }

    /// Stores a JSON value with the cache TTL; failures are ignored (it is only a copy).
    pub async fn set(&self, key: &str, value: &str) {
        if let Some(mut c) = self.conn() {
            let ttl = self.ttl_secs;
            self.bounded(async move { c.set_ex::<_, _, ()>(key, value, ttl).await })
                .await;
        }
    }

    /// Stores JSON values with the cache TTL in one round trip; failures are ignored.
    pub async fn set_many(&self, pairs: impl IntoIterator<Item = (String, String)>) {
        let mut pipe = redis::pipe();
        let mut any = false;
        for (k, v) in pairs {
            pipe.set_ex(k, v, self.ttl_secs).ignore();
            any = true;
        }
        if let (true, Some(mut c)) = (any, self.conn()) {
            self.bounded(async move { pipe.query_async::<()>(&mut c).await })
                .await;
        }
    }

    /// Deletes the Redis copy, tells every replica, and deletes again a little later.
    pub async fn invalidate(self: &Arc<Self>, what: Invalidation) {
        let Some(mut c) = self.conn() else { return };
        let key = what.key();
        if let Some(k) = key.clone() {
            let mut c2 = c.clone();
            self.bounded(async move { c2.del::<_, ()>(k).await }).await;
        }
        let channel = self.channel.clone();
        let msg = what.encode();
        self.bounded(async move { c.publish::<_, _, ()>(channel, msg).await })
            .await;
        if let Some(k) = key {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SECOND_DELETE).await;
                if let Some(mut c) = me.conn() {
                    me.bounded(async move { c.del::<_, ()>(k).await }).await;
                }
            });
        }
    }

    /// Keeps a connection and the invalidation subscription alive until `caches` is dropped.
    /// Each (re)subscription drops every local entry first: messages may have been missed.
    pub fn spawn(self: &Arc<Self>, caches: Weak<Caches>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                if caches.upgrade().is_none() {
                    return;
                }
                match me.subscribe_once(&caches).await {
                    Ok(()) => return,
                    Err(e) => {
                        me.set_healthy(false);
                        tracing::debug!(error = %e, "Redis subscription lost; retrying");
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        })
    }

    async fn subscribe_once(&self, caches: &Weak<Caches>) -> redis::RedisResult<()> {
        let connect = async {
            let cm = self.client.get_connection_manager().await?;
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>((cm, pubsub))
        };
        let (cm, pubsub) = tokio::time::timeout(Duration::from_secs(2), connect)
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::IoError, "connect timed out"))
            })??;
        if let Ok(mut c) = self.conn.write() {
            *c = Some(cm);
        }
        self.set_healthy(true);
        if let Some(c) = caches.upgrade() {
            c.local_invalidate_all().await;
        }
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Some(caches) = caches.upgrade() else {
                return Ok(());
            };
            let payload: String = msg.get_payload().unwrap_or_default();
            if let Some(inv) = Invalidation::decode(&payload) {
                caches.apply(inv).await;
            }
        }
        if let Ok(mut c) = self.conn.write() {
            *c = None;
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::IoError,
            "subscription closed",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_round_trip_through_their_wire_form() {
        for i in [
            Invalidation::Promoter("P:1".into()),
            Invalidation::Binding("C1".into()),
            Invalidation::Network,
            Invalidation::Catalog,
        ] {
            assert_eq!(Invalidation::decode(&i.encode()), Some(i));
        }
        assert_eq!(Invalidation::decode("x"), None);
    }
}
