//! Building and running the server: store, app, tower stack, services.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;

use crate::app::App;
use crate::config::Settings;
use crate::grpc::frames::{small_frames_layer, Unvectored};
use crate::grpc::pb::network_service_server::NetworkServiceServer;
use crate::grpc::pb::rule_service_server::RuleServiceServer;
use crate::grpc::pb::server::commission_service_server::CommissionServiceServer;
use crate::grpc::pb::settlement_service_server::SettlementServiceServer;
use crate::grpc::pb::FILE_DESCRIPTOR_SET;
use crate::grpc::services::Services;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// Health-check service name that reports whether the shared cache (Redis) answers.
pub const REDIS_HEALTH_NAME: &str = "prorata.v1.Cache";
/// How often the Redis health status is refreshed.
const REDIS_HEALTH_PERIOD_MS: u64 = 250;
/// How often health looks for a store failure that needs a restart (`Store::failed`).
const STORE_HEALTH_PERIOD_MS: u64 = 250;

/// Opens the configured store (PostgreSQL when a URL is set, SQLite otherwise) and runs
/// its migrations.
pub async fn open_store(s: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    if s.database_url.is_empty() {
        let store = SqliteStore::open(&s.sqlite_path)
            .await
            .with_context(|| format!("opening SQLite database {}", s.sqlite_path.display()))?;
        Ok(Arc::new(store))
    } else {
        let store = PgStore::connect(&s.database_url, s.db_max_connections, None)
            .await
            .context("connecting to PostgreSQL")?;
        Ok(Arc::new(store))
    }
}

/// Limits of one server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Per-call timeout.
    pub request_timeout: Duration,
    /// Timeout of the bulk and streaming calls ([`LONG_CALLS`]).
    pub long_request_timeout: Duration,
    /// Calls in flight across connections.
    pub max_concurrent_requests: usize,
    /// Streams per connection.
    pub max_streams_per_connection: u32,
    /// Largest message.
    pub max_message_bytes: usize,
    /// Drain bound at shutdown.
    pub shutdown_grace: Duration,
}

impl From<&Settings> for ServerLimits {
    fn from(s: &Settings) -> Self {
        ServerLimits {
            request_timeout: Duration::from_millis(s.request_timeout_ms),
            long_request_timeout: Duration::from_millis(s.long_request_timeout_ms),
            max_concurrent_requests: s.max_concurrent_requests,
            max_streams_per_connection: s.max_streams_per_connection,
            max_message_bytes: s.max_message_bytes,
            shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            request_timeout: Duration::from_secs(5),
            long_request_timeout: Duration::from_secs(3600),
            max_concurrent_requests: 1024,
            max_streams_per_connection: 256,
            max_message_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A panic in a handler becomes INTERNAL for that call; the process and the connection
/// live on.
#[derive(Clone, Copy, Debug)]
struct PanicToInternal;

impl tower_http::catch_panic::ResponseForPanic for PanicToInternal {
    type ResponseBody = tonic::body::Body;
    fn response_for_panic(
        &mut self,
        err: Box<dyn std::any::Any + Send + 'static>,
    ) -> http::Response<Self::ResponseBody> {
        let what = err
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| err.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        tracing::error!(panic = %what, "handler panicked");
        tonic::Status::internal("internal error: the call failed and nothing was stored")
            .into_http()
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight calls for
/// at most `limits.shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let services = Services::new(app.clone());
    let (health_reporter, health) = tonic_health::server::health_reporter();
    set_all(&health_reporter, tonic_health::ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let max = limits.max_message_bytes;
    let refresh = app.spawn_catalog_refresh();
    // Redis down is not the service down: replicas keep serving from moka and the
    // database. Its state is reported under its own health name, and logged on change.
    let redis_health = app.redis_healthy().map(|_| {
        let (app, reporter) = (app.clone(), health_reporter.clone());
        tokio::spawn(async move {
            use tonic_health::ServingStatus;
            let mut tick = tokio::time::interval(Duration::from_millis(REDIS_HEALTH_PERIOD_MS));
            loop {
                tick.tick().await;
                let up = app.redis_healthy().unwrap_or(false);
                metrics::gauge!("prorata_redis_up").set(if up { 1.0 } else { 0.0 });
                reporter
                    .set_service_status(
                        REDIS_HEALTH_NAME,
                        if up {
                            ServingStatus::Serving
                        } else {
                            ServingStatus::NotServing
                        },
                    )
                    .await;
            }
        })
    });

    // A store that failed for good (a WAL it could not sync) serves nothing until it is
    // restarted: say so to the probes, once, for the service and every part of it.
    let store_health = {
        let (app, reporter) = (app.clone(), health_reporter.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(STORE_HEALTH_PERIOD_MS));
            loop {
                tick.tick().await;
                if let Some(e) = app.store().failed() {
                    tracing::error!(error = %e, "the store failed: NOT_SERVING until restarted");
                    set_all(&reporter, tonic_health::ServingStatus::NotServing).await;
                    break;
                }
            }
        })
    };

    // Order of the stack (outermost first): catch panics around everything, so a panic in
    // any layer is an INTERNAL status; then the per-call timeout, which also bounds the
    // wait in line; then the global concurrency limit, so calls beyond it wait before any
    // work; innermost, answers cut into frames h2 writes together (grpc::frames). A
    // client's own grpc-timeout still applies inside (tonic).
    let server = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(limits.max_streams_per_connection as usize)
        .max_concurrent_streams(limits.max_streams_per_connection)
        .tcp_nodelay(true)
        .layer(CatchPanicLayer::custom(PanicToInternal))
        .layer(CallTimeoutLayer {
            default: limits.request_timeout,
            long: limits.long_request_timeout,
        })
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests,
        ))
        .layer(small_frames_layer())
        .add_service(health)
        .add_service(reflection)
        .add_service(
            CommissionServiceServer::new(services.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            RuleServiceServer::new(services.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            NetworkServiceServer::new(services.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            SettlementServiceServer::new(services)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // tonic's tcp_nodelay does not reach connections accepted from our own listener: set it
    // on each one, or every response's trailer waits ~40 ms for a delayed ACK (Nagle).
    // Each connection is `Unvectored`, so h2 coalesces answers of up to 1 KiB a frame
    // (grpc::frames; small_frames_layer above cuts the bodies to fit).
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |conn| {
        if let Ok(c) = &conn {
            let _ = c.set_nodelay(true);
        }
        conn.map(Unvectored)
    });
    let serving = server.serve_with_incoming_shutdown(incoming, async {
        let _ = stop_rx.await;
    });
    tokio::pin!(serving);
    let result = tokio::select! {
        r = &mut serving => r.map_err(anyhow::Error::from),
        () = shutdown => {
            tracing::info!("shutting down: draining in-flight calls");
            set_all(&health_reporter, tonic_health::ServingStatus::NotServing).await;
            let _ = stop_tx.send(());
            match tokio::time::timeout(limits.shutdown_grace, &mut serving).await {
                Ok(r) => r.map_err(anyhow::Error::from),
                Err(_) => {
                    tracing::warn!(grace_ms = limits.shutdown_grace.as_millis() as u64, "drain took too long; stopping");
                    Ok(())
                }
            }
        }
    };
    refresh.abort();
    store_health.abort();
    if let Some(h) = redis_health {
        h.abort();
    }
    result
}

/// One status for the overall service, which probes read, and for every service.
async fn set_all(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    use tonic::server::NamedService;
    for name in [
        "",
        CommissionServiceServer::<Services>::NAME,
        RuleServiceServer::<Services>::NAME,
        NetworkServiceServer::<Services>::NAME,
        SettlementServiceServer::<Services>::NAME,
    ] {
        reporter.set_service_status(name, status).await;
    }
}

/// Binds the configured address.
pub async fn bind(addr: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Calls that legitimately run long: bulk and streaming RPCs, reconciliation.
pub const LONG_CALLS: &[&str] = &[
    "/prorata.v1.CommissionService/ComputeStream",
    "/prorata.v1.NetworkService/ImportNetwork",
    "/prorata.v1.SettlementService/Reconcile",
];

/// Bounds every call: [`LONG_CALLS`] by the long timeout, the rest by the default.
/// An expired call answers DEADLINE_EXCEEDED; whatever it was doing is dropped, and
/// every write is transactional, so nothing partial is stored.
#[derive(Debug, Clone, Copy)]
pub struct CallTimeoutLayer {
    /// Ordinary calls.
    pub default: Duration,
    /// [`LONG_CALLS`].
    pub long: Duration,
}

impl<S> tower::Layer<S> for CallTimeoutLayer {
    type Service = CallTimeout<S>;
    fn layer(&self, inner: S) -> CallTimeout<S> {
        CallTimeout {
            inner,
            limits: *self,
        }
    }
}

/// The service of [`CallTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct CallTimeout<S> {
    inner: S,
    limits: CallTimeoutLayer,
}

impl<S, B> tower::Service<http::Request<B>> for CallTimeout<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limit = if LONG_CALLS.contains(&req.uri().path()) {
            self.limits.long
        } else {
            self.limits.default
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the call took longer than {} ms",
                    limit.as_millis()
                ))
                .into_http()),
            }
        })
    }
}
