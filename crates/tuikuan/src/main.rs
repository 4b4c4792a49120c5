//! `tuikuan`: the one binary. A thin command line over the `tuikuan` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tuikuan::cluster::Cluster;
use tuikuan::config::{DeploymentConfig, Service};
use tuikuan::demo::{self, DemoOptions};
use tuikuan_kernel::SystemClock;

#[derive(Parser)]
#[command(
    name = "tuikuan",
    version,
    about = "tuikuan (退款): a refund platform for payment companies"
)]
struct Cli {
    /// Configuration file (TOML); environment variables override it.
    #[arg(long, global = true, env = "TUIKUAN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all seven services in this process, each on its own port.
    Up,
    /// Run one service in this process; peers come from the configuration.
    Serve {
        /// accounting, clearing, business, refund, payout, reconciliation or bank.
        service: String,
    },
    /// Run the whole chain with the bank simulator on a manual clock and print a summary.
    Demo {
        /// Keep the demo's databases here instead of a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// PostgreSQL URL template with {service}, instead of SQLite.
        #[arg(long)]
        database_url: Option<String>,
        /// Seed of the bank simulator.
        #[arg(long, default_value_t = 2018)]
        seed: u64,
    },
    /// Operations command line: refunds, payments, balances, reconciliation, jobs.
    Ctl(tuikuan::ctl::Ctl),
    /// Benchmarks: print figures with the hardware they ran on.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Merchant refunds accepted through the whole chain, and bare gRPC round trips.
    Chain {
        #[arg(long, default_value_t = 10_000)]
        refunds: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// PostgreSQL URL template with {service}; SQLite when absent.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Ledger postings per second through the accounting service's batch call.
    Ledger {
        #[arg(long, default_value_t = 100_000)]
        postings: usize,
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long)]
        database_url: Option<String>,
    },
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

async fn ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot listen for ctrl-c");
        std::future::pending::<()>().await;
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up => {
            init_tracing("info");
            let config = DeploymentConfig::load(cli.config.as_deref())?;
            let cluster = Cluster::start(config, Arc::new(SystemClock), &[]).await?;
            for s in cluster.running() {
                println!("{:<15} {}", s.name(), cluster.url(s));
            }
            println!("all services up; ctrl-c stops them");
            cluster.run_until(ctrl_c()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { service } => {
            init_tracing("info");
            let service = Service::parse(&service)?;
            let config = DeploymentConfig::load(cli.config.as_deref())?;
            let cluster = Cluster::start(config, Arc::new(SystemClock), &[service]).await?;
            println!("{} {}", service.name(), cluster.url(service));
            cluster.run_until(ctrl_c()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            data_dir,
            database_url,
            seed,
        } => {
            // The demo's story is on stdout; RUST_LOG=warn shows the services' warnings too.
            init_tracing("error");
            let summary = demo::run(DemoOptions {
                data_dir,
                database_url,
                seed,
                verbose: true,
            })
            .await
            .context("demo failed")?;
            Ok(if summary.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Ctl(ctl) => {
            init_tracing("warn");
            let config = DeploymentConfig::load(cli.config.as_deref())?;
            tuikuan::ctl::run(&config, ctl).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { what } => {
            init_tracing("warn");
            let report = match what {
                BenchCommand::Chain {
                    refunds,
                    concurrency,
                    database_url,
                } => {
                    tuikuan::bench::chain(tuikuan::bench::ChainOptions {
                        refunds,
                        concurrency,
                        database_url,
                    })
                    .await?
                }
                BenchCommand::Ledger {
                    postings,
                    batch,
                    concurrency,
                    database_url,
                } => {
                    tuikuan::bench::ledger(tuikuan::bench::LedgerOptions {
                        postings,
                        batch,
                        concurrency,
                        database_url,
                    })
                    .await?
                }
            };
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
