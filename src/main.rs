//! The `prorata` binary: parse the command line, build, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use prorata::config::Settings;
use prorata::{app::App, domain::ruleset, events, startup, telemetry, vectors};

/// Results are built from many small allocations (shares, explanations); mimalloc is
/// measurably faster at that than the system allocator (benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "prorata",
    version,
    about = "Exact commission and revenue splits over gRPC"
)]
struct Cli {
    /// Settings file (TOML); defaults to ./prorata.toml when present.
    #[arg(long, global = true, env = "PRORATA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API (SQLite in ./prorata.db unless PRORATA_DATABASE_URL is set).
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Run conformance vector files or directories through a real server on loopback.
    Vectors {
        /// Files or directories of vector YAML.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// PostgreSQL URL: every file gets its own schema (default: a fresh SQLite file each).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Check every stored split, movement and balance against the money invariants and,
    /// with --orders, against the order system's figures; exits 1 on any discrepancy.
    Reconcile {
        /// CSV of `order_id,amount_paid,amount_refunded` (decimal, the order's currency;
        /// a header line is allowed).
        #[arg(long)]
        orders: Option<PathBuf>,
    },
    /// Validate a rule-set document (YAML or JSON) and print its errors and warnings.
    Validate {
        /// The document.
        file: PathBuf,
    },
    /// Load-generate against a running server and report throughput and latency.
    Bench(Box<prorata::loadgen::BenchArgs>),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("prorata: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve => {
            let settings = Settings::load(cli.config.as_deref())?;
            telemetry::init(&settings.log_format, &settings.log_level);
            telemetry::init_metrics(&settings.metrics_addr)?;
            let store = startup::open_store(&settings).await?;
            let backend = store.backend();
            let group = settings.group_commit(store.backend());
            let app = App::with_group_commit(store.clone(), &settings.cache(), group).await?;
            let (listener, addr) = startup::bind(&settings.grpc_addr).await?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let until_stopped = || {
                let mut rx = stopped.clone();
                async move {
                    let _ = rx.wait_for(|v| *v).await;
                }
            };
            let mut tasks = vec![tokio::spawn(events::partition_keeper(
                store.clone(),
                until_stopped(),
            ))];
            if settings.nats_url.is_empty() {
                tasks.push(tokio::spawn(events::outbox_janitor(
                    store,
                    settings.outbox_max_rows,
                    until_stopped(),
                )));
            } else {
                let es = events::EventSettings::new(&settings.nats_url);
                let js = events::connect(&es).await?;
                if settings.relay_enabled {
                    tasks.push(tokio::spawn(events::relay::run(
                        store,
                        js.clone(),
                        es.clone(),
                        until_stopped(),
                    )));
                }
                if settings.consumer_enabled {
                    let (app, stop) = (app.clone(), until_stopped());
                    tasks.push(tokio::spawn(async move {
                        if let Err(e) = events::consumer::run(app, js, es, stop).await {
                            tracing::error!(error = %e, "order-event consumer stopped");
                        }
                    }));
                }
            }
            tracing::info!(%addr, backend, broker = !settings.nats_url.is_empty(), "prorata serving gRPC");
            startup::run(
                listener,
                app,
                (&settings).into(),
                startup::shutdown_signal(),
            )
            .await?;
            let _ = stop.send(true);
            for t in tasks {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let settings = Settings::load(cli.config.as_deref())?;
            telemetry::init(&settings.log_format, &settings.log_level);
            let store = startup::open_store(&settings).await?;
            println!("{} schema is up to date", store.backend());
            Ok(ExitCode::SUCCESS)
        }
        Command::Vectors {
            paths,
            database_url,
        } => {
            telemetry::init("text", "warn");
            let s = vectors::run(&paths, database_url.as_deref()).await?;
            Ok(if s.failed == 0 && s.passed > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Reconcile { orders } => {
            let settings = Settings::load(cli.config.as_deref())?;
            telemetry::init(&settings.log_format, "warn");
            let external = match orders {
                Some(path) => read_orders_csv(&path)?,
                None => Vec::new(),
            };
            let store = startup::open_store(&settings).await?;
            let app = App::new(store, &settings.cache()).await?;
            let report = app.reconcile(&external).await?;
            print!("{}", report.render());
            Ok(if report.discrepancies.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench(args) => {
            telemetry::init("text", "warn");
            let s = prorata::loadgen::run(*args).await?;
            Ok(if s.ok > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Validate { file } => {
            let text = std::fs::read_to_string(&file)?;
            let c = ruleset::compile(&text);
            for e in &c.errors {
                println!("error: {e}");
            }
            for w in &c.warnings {
                println!("warning: {w}");
            }
            println!("{} errors, {} warnings", c.errors.len(), c.warnings.len());
            Ok(if c.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Reads `order_id,amount_paid,amount_refunded` lines (ids cannot hold commas or quotes).
fn read_orders_csv(
    path: &std::path::Path,
) -> anyhow::Result<Vec<prorata::settlement::ExternalOrder>> {
    use prorata::domain::order::RawAmount;
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (n == 0 && line.starts_with("order_id")) {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        anyhow::ensure!(
            f.len() == 3,
            "{}:{}: expected order_id,amount_paid,amount_refunded",
            path.display(),
            n + 1
        );
        out.push(prorata::settlement::ExternalOrder {
            order_id: f[0].to_string(),
            paid: RawAmount::Decimal(f[1].to_string()),
            refunded: RawAmount::Decimal(f[2].to_string()),
        });
    }
    Ok(out)
}
