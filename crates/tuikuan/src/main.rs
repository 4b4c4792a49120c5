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
    /// Certificates for mutual TLS between services (see docs/security.md).
    Certs {
        #[command(subcommand)]
        what: CertsCommand,
    },
    /// Check every invariant across all services of a running deployment; exits non-zero on any
    /// violation.
    Audit {
        /// An unfinished refund without progress for longer than this many days is a violation.
        #[arg(long, default_value_t = 7)]
        stale_days: i64,
    },
    /// Crash faults with real processes: each service its own `tuikuan serve` process, a load of
    /// refunds, a random service killed (SIGKILL) and restarted every few seconds, then the
    /// auditor. Exits non-zero if a refund was lost or paid twice or the auditor objects.
    Chaos {
        #[arg(long, default_value_t = 1000)]
        refunds: usize,
        #[arg(long, default_value_t = 3000)]
        kill_every_ms: u64,
        /// Stop after this many kills (default: keep killing until the load is done).
        #[arg(long)]
        kills: Option<usize>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Keep databases and logs here instead of a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// PostgreSQL URL template with {service}, instead of SQLite.
        #[arg(long)]
        database_url: Option<String>,
        /// Seconds to wait, after the load and the kills, for every refund to become final.
        #[arg(long, default_value_t = 600)]
        settle_secs: u64,
        /// The tuikuan binary to run services with (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Put a seeded fault-injecting proxy in front of every service: delays, dropped
        /// connections, answers lost after the far side acted.
        #[arg(long)]
        network_faults: bool,
    },
    /// Operator-token keys: `keys init DIR` makes a signing key (business layer) and its public key
    /// (every service).
    Keys {
        #[command(subcommand)]
        what: KeysCommand,
    },
    /// Offline operator tools: `operator hash-password` prints an argon2id hash for
    /// `bootstrap_admin_password_hash`.
    Operator {
        #[command(subcommand)]
        what: OperatorCommand,
    },
    /// Benchmarks: print figures with the hardware they ran on.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write DIR/operator-signing.key (mode 0600) and DIR/operator-public.key.
    Init { dir: PathBuf },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Print the argon2id hash of a password (asked twice, or one line of standard input).
    HashPassword {
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a development CA and one certificate and key per identity (the seven services, ctl,
    /// console) plus the public listener's certificate, in DIR.
    Init {
        dir: PathBuf,
        /// Extra host names or IP addresses for the public listener's certificate.
        #[arg(long = "public-host")]
        public_hosts: Vec<String>,
        /// Replace an existing CA and every certificate in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Issue new certificates for NAMEs (identities, or merchant-api) with the CA in DIR,
    /// replacing their files: leaf rotation.
    Issue {
        dir: PathBuf,
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long = "public-host")]
        public_hosts: Vec<String>,
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
    /// Reconciliation: a generated WeChat bill parsed, matched, stored and written back.
    Recon {
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Parse and match only (the peak-memory figure for very large files).
        #[arg(long)]
        parse_only: bool,
    },
    /// Daily spreadsheet generation (.xlsx) for one large batch.
    Sheets {
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
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
    // Logs go to standard error: standard output carries what a command prints (addresses,
    // tables, JSON), which scripts and tests read.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Logs on stderr; stdout carries what a command prints (listener table, reports, JSON).
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGINT (ctrl-c) or SIGTERM (what `kill`, systemd and Kubernetes send): the
/// services then turn NOT_SERVING, drain and stop, and the process exits 0.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only ctrl-c stops");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up => {
            init_tracing("info");
            let config = DeploymentConfig::load(cli.config.as_deref())?;
            let cluster = Cluster::start(config, Arc::new(SystemClock), &[]).await?;
            tuikuan::out!("{}", tuikuan::cluster::listener_table(&cluster));
            tuikuan::outln!("all services up; ctrl-c or SIGTERM stops them");
            cluster.run_until(stop_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { service } => {
            init_tracing("info");
            let service = Service::parse(&service)?;
            let config = DeploymentConfig::load(cli.config.as_deref())?;
            let cluster = Cluster::start(config, Arc::new(SystemClock), &[service]).await?;
            tuikuan::out!("{}", tuikuan::cluster::listener_table(&cluster));
            cluster.run_until(stop_signal()).await?;
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
        Command::Certs { what } => {
            let (dir, written) = match what {
                CertsCommand::Init {
                    dir,
                    public_hosts,
                    force,
                } => {
                    let pki = tuikuan_proto::pki::Pki::generate(&public_hosts)
                        .map_err(|e| anyhow::anyhow!(e.message))?;
                    let written = pki
                        .write(&dir, force)
                        .map_err(|e| anyhow::anyhow!(e.message))?;
                    (dir, written)
                }
                CertsCommand::Issue {
                    dir,
                    names,
                    public_hosts,
                } => {
                    let written = tuikuan_proto::pki::issue(&dir, &names, &public_hosts)
                        .map_err(|e| anyhow::anyhow!(e.message))?;
                    (dir, written)
                }
            };
            for f in &written {
                tuikuan::outln!("{}", dir.join(f).display());
            }
            tuikuan::outln!(
                "wrote {} files; keep ca-key.pem offline in production (docs/security.md)",
                written.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { stale_days } => {
            init_tracing("warn");
            let config = DeploymentConfig::load(cli.config.as_deref())?;
            let mut clients = tuikuan::clients::Clients::for_deployment(&config)?;
            // The auditor reads every service's records as the operator logged in with ctl.
            let session = tuikuan::session::session_path(None)?;
            let now_ms = chrono::Utc::now().timestamp_millis();
            if let Some(token) = tuikuan::session::current_token(&session, now_ms)? {
                clients = clients.with_token(&token)?;
            }
            let report = tuikuan::audit::run_with(
                &clients,
                &tuikuan::audit::AuditOptions {
                    stale_after_ms: stale_days.saturating_mul(24 * 3600 * 1000),
                    ..Default::default()
                },
            )
            .await
            .context("audit could not read every service")?;
            tuikuan::out!("{report}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Chaos {
            refunds,
            kill_every_ms,
            kills,
            seed,
            concurrency,
            data_dir,
            database_url,
            settle_secs,
            binary,
            network_faults,
        } => {
            init_tracing("warn");
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe().context("the path of this binary")?,
            };
            let mut options = tuikuan::chaos::ChaosOptions::new(binary);
            options.refunds = refunds;
            options.kill_every_ms = kill_every_ms;
            options.kills = kills;
            options.seed = seed;
            options.concurrency = concurrency;
            options.data_dir = data_dir;
            options.database_url = database_url;
            options.settle_timeout = std::time::Duration::from_secs(settle_secs);
            options.network = network_faults.then(tuikuan::chaos::NetFaults::default);
            options.verbose = true;
            let report = tuikuan::chaos::run(options).await?;
            tuikuan::out!("{report}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Keys {
            what: KeysCommand::Init { dir },
        } => {
            let (secret, public) = tuikuan::keys::init(&dir)?;
            tuikuan::outln!("signing key (business layer only): {}", secret.display());
            tuikuan::outln!("operator_signing_key_file = \"{}\"", secret.display());
            tuikuan::outln!("operator_public_keys = [\"{public}\"]");
            Ok(ExitCode::SUCCESS)
        }
        Command::Operator {
            what: OperatorCommand::HashPassword { password_stdin },
        } => {
            let password = tuikuan::session::read_password("password: ", password_stdin)?;
            if !password_stdin && tuikuan::session::read_password("again: ", false)? != password {
                anyhow::bail!("the passwords differ");
            }
            tuikuan_auth::domain::registry::validate_password(&password, "password")
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let hash = tuikuan_auth::password::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            tuikuan::outln!("{hash}");
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
                BenchCommand::Recon { rows, parse_only } => {
                    tuikuan::bench::recon(rows, parse_only).await?
                }
                BenchCommand::Sheets { rows } => tuikuan::bench::sheets(rows).await?,
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
            tuikuan::outln!("{report}");
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

#[cfg(test)]
mod tests {
    /// clap's own consistency checks of the whole command line (unique flags, valid defaults).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
