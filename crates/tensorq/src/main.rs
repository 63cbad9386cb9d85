//! The `tensorq` binary: `server` runs the broker; `perf`, `worker` and `demo` come from the
//! other crates of the workspace. Errors reach the user as one clear line (anyhow), and the
//! exit status says whether the command succeeded.

mod config;
mod demo;
mod server;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tensorq",
    version,
    about = "An AMQP 0-9-1 broker joined with an AI runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker.
    Server(server::ServerArgs),
    /// Measure a broker's throughput and latency (in the manner of PerfTest).
    Perf(tensorq_perf::PerfArgs),
    /// Accept AMQP connections and discard publishes: the load generator's own ceiling.
    PerfSink(tensorq_perf::PerfSinkArgs),
    /// Run a model worker against a broker (tensorq or RabbitMQ).
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// The whole system in one command: embedded broker, training from a queue, serving, RPC.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand, Debug)]
enum WorkerCommand {
    /// Serve an ONNX model from a queue with dynamic batching and RPC replies.
    Serve(tensorq_worker::serve::ServeArgs),
    /// Train a model from a queue of labelled examples.
    Train(tensorq_worker::train::TrainArgs),
}

/// Logs go to stderr; `TENSORQ_LOG` overrides `default` (the demo prints its own report, so it
/// logs only warnings by default).
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENSORQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// mimalloc instead of glibc malloc: the broker frees on one thread what it allocated on
/// another (a message is parsed on the publisher's task and dropped on the consumer's), and
/// glibc's per-arena locks showed up as futex waits in the end-to-end profile. Built without
/// transparent huge pages (feature `no_thp`): with THP the RSS with a 1M-message durable backlog
/// rose from 65 to 103 MB. Freed memory goes back to the OS after [`PURGE_DELAY_MS`] (see
/// [`set_purge_delay`]).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (index 15 in both mimalloc v2 and v3, which libmimalloc-sys does not
/// export as a constant): milliseconds before freed memory goes back to the OS.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays mapped before mimalloc returns it. 0 (return at once) cost the
/// serving path 9-12% more CPU per message in page faults, zeroing and TLB shootdowns; 10 ms
/// keeps that away and the 1M-message backlog at 62.0-62.5 MB RSS (0 ms: 62.1 MB).
const PURGE_DELAY_MS: std::os::raw::c_long = 10;

fn set_purge_delay() {
    // SAFETY: called first thing in main, before any other thread exists (mi_option_set is not
    // thread safe); the option only changes when mimalloc purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

fn main() {
    set_purge_delay();
    let cli = Cli::parse();
    init_logging(if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Perf(args) => {
                let json = args.json;
                let report = tensorq_perf::run(args).await?;
                println!("{}", report.render(json));
                Ok(())
            }
            Command::Worker(WorkerCommand::Serve(args)) => {
                tensorq_worker::serve::run(args, server::stop_signal()).await?;
                Ok(())
            }
            Command::Worker(WorkerCommand::Train(args)) => {
                let report = tensorq_worker::train::run(args).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            Command::Demo(args) => demo::run(args).await,
            Command::PerfSink(args) => {
                let json = args.json;
                let report = tensorq_perf::run_sink(args).await?;
                println!("{}", report.render(json));
                Ok(())
            }
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
