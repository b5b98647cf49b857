//! The `prorata` binary: parse the command line, build, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use prorata::config::Settings;
use prorata::{app::App, domain::ruleset, startup, telemetry, vectors};

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
    /// Validate a rule-set document (YAML or JSON) and print its errors and warnings.
    Validate {
        /// The document.
        file: PathBuf,
    },
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
            let store = startup::open_store(&settings).await?;
            let backend = store.backend();
            let app = App::new(store, &settings.cache()).await?;
            let (listener, addr) = startup::bind(&settings.grpc_addr).await?;
            tracing::info!(%addr, backend, "prorata serving gRPC");
            startup::run(
                listener,
                app,
                (&settings).into(),
                startup::shutdown_signal(),
            )
            .await?;
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
