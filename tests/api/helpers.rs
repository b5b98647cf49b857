//! Spawning the real server on a loopback port with a fresh store, and real clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prorata::app::App;
use prorata::cache::CacheSettings;
use prorata::grpc::pb;
use prorata::grpc::pb::commission_service_client::CommissionServiceClient;
use prorata::grpc::pb::network_service_client::NetworkServiceClient;
use prorata::grpc::pb::rule_service_client::RuleServiceClient;
use prorata::startup::{self, ServerLimits};
use prorata::store::postgres::PgStore;
use prorata::store::sqlite::SqliteStore;
use prorata::store::Store;
use sqlx::Row;
use tonic::transport::Channel;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL URL tests use.
pub fn pg_url() -> String {
    std::env::var("PRORATA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".into())
}

/// True when CI demands that PostgreSQL (and Redis) tests really run.
pub fn services_required() -> bool {
    std::env::var("PRORATA_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Checks that PostgreSQL answers; without it the PostgreSQL half of a test is skipped
/// with a message, unless PRORATA_REQUIRE_SERVICES=1 makes that a failure.
pub async fn postgres_available() -> bool {
    let url = pg_url();
    let ok = tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::postgres::PgPool::connect(&url),
    )
    .await;
    match ok {
        Ok(Ok(pool)) => {
            pool.close().await;
            true
        }
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            if services_required() {
                panic!("PostgreSQL is required (PRORATA_REQUIRE_SERVICES=1) but {url} is unreachable: {why}");
            }
            eprintln!("SKIPPING the PostgreSQL half of this test: {url} is unreachable ({why}); set PRORATA_REQUIRE_SERVICES=1 to fail instead");
            false
        }
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    pub commission: CommissionServiceClient<Channel>,
    pub rules: RuleServiceClient<Channel>,
    pub network: NetworkServiceClient<Channel>,
    pub store: Arc<dyn Store>,
    db: Db,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _tmp: Option<tempfile::TempDir>,
    schema: Option<String>,
}

enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl TestApp {
    /// Starts a server on 127.0.0.1:0 with a fresh store; `None` when the backend is
    /// unavailable and not required.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, ServerLimits::default()).await
    }

    /// [`TestApp::spawn`] with explicit limits.
    pub async fn spawn_with(backend: Backend, limits: ServerLimits) -> Option<TestApp> {
        let (store, db, tmp, schema): (Arc<dyn Store>, Db, _, _) = match backend {
            Backend::Sqlite => {
                let tmp = tempfile::tempdir().expect("tempdir");
                let path = tmp.path().join("test.db");
                let store = SqliteStore::open(&path).await.expect("open sqlite");
                let db = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(
                        sqlx::sqlite::SqliteConnectOptions::new()
                            .filename(&path)
                            .read_only(true),
                    )
                    .await
                    .expect("inspection connection");
                (Arc::new(store), Db::Sqlite(db), Some(tmp), None)
            }
            Backend::Postgres => {
                if !postgres_available().await {
                    return None;
                }
                let schema = format!(
                    "prorata_test_{}_{}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::SeqCst)
                );
                let store = PgStore::connect(&pg_url(), 16, Some(&schema))
                    .await
                    .expect("connect postgres");
                let opts: sqlx::postgres::PgConnectOptions = pg_url().parse().expect("url");
                let db = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect_with(opts.options([("search_path", schema.as_str())]))
                    .await
                    .expect("inspection connection");
                (Arc::new(store), Db::Postgres(db), None, Some(schema))
            }
        };
        let app = App::new(store.clone(), &CacheSettings::default())
            .await
            .expect("app");
        let (listener, addr) = startup::bind("127.0.0.1:0").await.expect("bind");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(startup::run(listener, app, limits, async {
            let _ = stopped.await;
        }));
        let channel = connect(addr).await;
        Some(TestApp {
            addr,
            commission: CommissionServiceClient::new(channel.clone()),
            rules: RuleServiceClient::new(channel.clone()),
            network: NetworkServiceClient::new(channel.clone()),
            channel,
            store,
            db,
            stop: Some(stop),
            server: Some(server),
            _tmp: tmp,
            schema,
        })
    }

    /// The SQLite database file (`None` on PostgreSQL).
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self._tmp.as_ref().map(|t| t.path().join("test.db"))
    }

    /// Rows in a table, read over a separate connection.
    pub async fn count(&self, table: &str) -> i64 {
        let q = format!("SELECT COUNT(*) AS n FROM {table}");
        match &self.db {
            Db::Sqlite(p) => sqlx::query(&q)
                .fetch_one(p)
                .await
                .expect("count")
                .get::<i64, _>("n"),
            Db::Postgres(p) => sqlx::query(&q)
                .fetch_one(p)
                .await
                .expect("count")
                .get::<i64, _>("n"),
        }
    }

    /// One text value read over the inspection connection (PostgreSQL casts with `::text`).
    pub async fn text(&self, sql: &str) -> Option<String> {
        match &self.db {
            Db::Sqlite(p) => sqlx::query_scalar(sql)
                .fetch_optional(p)
                .await
                .expect("query"),
            Db::Postgres(p) => sqlx::query_scalar(sql)
                .fetch_optional(p)
                .await
                .expect("query"),
        }
    }

    /// Runs a statement over the inspection connection (to prove triggers refuse it).
    pub async fn execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        match &self.db {
            Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
    }

    /// Publishes a rule-set document; panics on failure.
    pub async fn publish(&mut self, doc: &str) -> pb::PublishRuleSetResponse {
        self.rules
            .publish_rule_set(pb::PublishRuleSetRequest {
                document: doc.into(),
            })
            .await
            .expect("publish")
            .into_inner()
    }

    /// GetSplit of one order id: the answer or the call's status.
    pub async fn get_split(
        &mut self,
        order_id: &str,
    ) -> Result<pb::GetSplitResponse, tonic::Status> {
        self.commission
            .get_split(pb::GetSplitRequest {
                order_id: order_id.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Upserts a promoter with an optional parent; panics on failure.
    pub async fn promoter(&mut self, id: &str, parent: Option<&str>) {
        self.network
            .upsert_promoter(pb::UpsertPromoterRequest {
                id: id.into(),
                parent: parent.map(Into::into),
                ..Default::default()
            })
            .await
            .expect("upsert promoter");
    }

    /// Binds a customer; panics on failure.
    pub async fn bind(&mut self, customer: &str, promoter: &str) {
        self.network
            .bind_customer(pb::BindCustomerRequest {
                customer: customer.into(),
                promoter: promoter.into(),
            })
            .await
            .expect("bind");
    }

    /// Stops the server (draining) and drops a PostgreSQL schema.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
        if let Some(schema) = self.schema.take() {
            if let Db::Postgres(p) = &self.db {
                p.close().await;
            }
            let _ = PgStore::drop_schema(&pg_url(), &schema).await;
        }
    }
}

/// A new HTTP/2 connection to the server.
pub async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// Money as a decimal string.
pub fn dec(s: &str) -> Option<pb::Money> {
    Some(pb::Money {
        amount: Some(pb::money::Amount::Decimal(s.into())),
    })
}

/// Money in minor units.
pub fn minor(v: i64) -> Option<pb::Money> {
    Some(pb::Money {
        amount: Some(pb::money::Amount::Minor(v)),
    })
}

/// A time from RFC 3339.
pub fn ts(s: &str) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(s).expect("rfc3339");
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

/// A valid one-line order.
pub fn order(id: &str, buyer: &str, price: &str) -> pb::Order {
    pb::Order {
        id: id.into(),
        merchant: "M1".into(),
        buyer: buyer.into(),
        paid_at: ts("2026-11-01T10:00:00Z"),
        currency: "CNY".into(),
        lines: vec![pb::OrderLine {
            id: "L1".into(),
            sku: "A".into(),
            category: "misc".into(),
            quantity: 1,
            unit_price: dec(price),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Per-account totals of a split, as decimal strings.
pub fn totals(s: &pb::Split) -> std::collections::BTreeMap<String, String> {
    s.totals
        .iter()
        .map(|t| (t.account.clone(), t.amount.clone()))
        .collect()
}

/// Runs a test body on both backends.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    };
}
