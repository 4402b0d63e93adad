//! `lnet-selftest`: LNet ping and bulk read/write between two processes,
//! with an optional raw TCP baseline (Lustre's `lst`). The work lives in
//! [`lnet::selftest`]; this is the command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lnet::Nid;
use lnet::selftest::{self, ClientOpts, ServeOpts, Test, report};

/// LNet self test: ping and bulk read/write over the tcp LND, with a raw
/// TCP baseline. Without --peer it starts its own server on 127.0.0.2.
#[derive(Debug, Parser)]
#[command(name = "lnet-selftest", version)]
struct Cli {
    /// Print one JSON line per result instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Also run the same pattern over plain TCP and print the ratio.
    #[arg(long, global = true)]
    baseline: bool,
    /// The server's NID; without it a local server process is started.
    #[arg(long, global = true)]
    peer: Option<Nid>,
    /// This node's NID (client default 127.0.0.1@tcp, server default 127.0.0.2@tcp).
    #[arg(long, global = true)]
    nid: Option<Nid>,
    /// LNet TCP port (every node of the network listens on it).
    #[arg(long, global = true)]
    port: Option<u16>,
    /// The raw TCP baseline port of the server.
    #[arg(long, global = true)]
    raw_port: Option<u16>,
    /// Seconds per test.
    #[arg(long, global = true, default_value_t = 3.0)]
    duration: f64,
    /// Requests in flight (default 1 for ping, 8 for brw).
    #[arg(long, global = true)]
    concurrency: Option<usize>,
    /// Bytes per bulk request.
    #[arg(long, global = true, default_value_t = 1 << 20)]
    size: usize,
    /// Fill and verify a data pattern in every bulk transfer.
    #[arg(long, global = true)]
    check: bool,
    /// Also print where each round's time goes (medians) on stderr.
    #[arg(long, global = true, hide = true)]
    timing: bool,
    /// Runtime worker threads per process (0: a current-thread runtime, the
    /// default: a local run's two processes then get about one core each).
    /// The raw baseline runs on the same runtime.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Small round trips.
    Ping,
    /// Bulk writes: the server GETs the client's pages.
    BrwWrite,
    /// Bulk reads: the server PUTs into the client's pages.
    BrwRead,
    /// ping, brw-write and brw-read in turn.
    All,
    /// Run a server (prints `READY <nid>`; exits on stdin EOF or SIGTERM).
    Serve,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let role = if matches!(cli.cmd, Cmd::Serve) { "lnet-selftest serve" } else { "lnet-selftest" };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{role}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = if cli.threads == 0 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads).enable_all().build()?
    };
    let res = rt.block_on(async_main(cli));
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    let tests = match cli.cmd {
        Cmd::Serve => {
            let nid = match cli.nid {
                Some(n) => n,
                None => "127.0.0.2@tcp".parse()?,
            };
            let port = cli.port.unwrap_or(selftest::DEFAULT_PORT);
            return selftest::serve(ServeOpts { nid, port, raw_port: cli.raw_port }).await;
        }
        Cmd::Ping => vec![Test::Ping],
        Cmd::BrwWrite => vec![Test::BrwWrite],
        Cmd::BrwRead => vec![Test::BrwRead],
        Cmd::All => vec![Test::Ping, Test::BrwWrite, Test::BrwRead],
    };
    if !cli.duration.is_finite() || cli.duration <= 0.0 || cli.duration > 86_400.0 {
        anyhow::bail!("--duration must be between 0 and 86400 seconds");
    }
    let opts = ClientOpts {
        tests,
        peer: cli.peer,
        nid: cli.nid,
        port: cli.port,
        raw_port: cli.raw_port,
        duration: Duration::from_secs_f64(cli.duration),
        concurrency: cli.concurrency,
        size: cli.size,
        check: cli.check,
        baseline: cli.baseline,
        server_args: vec!["--threads".into(), cli.threads.to_string()],
    };
    selftest::validate(&opts)?;
    let json = cli.json;
    let net = match cli.nid.map(|n| n.net.kind) {
        Some(lnet::NetType::O2ib) => "o2ib",
        _ => "tcp",
    };
    let cli_timing = cli.timing;
    let rows = selftest::run_client(opts, |row| {
        if json {
            println!("{}", report::json_line_net(row, net));
        }
    })
    .await?;
    if !json {
        print!("{}", report::table(&rows));
    }
    if cli_timing {
        eprint!("{}", report::breakdown(&rows));
    }
    Ok(())
}
