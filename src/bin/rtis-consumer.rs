//! `rtis-consumer`: Kafka → JSON lines, one file per partition.
use clap::Parser;

/// Decodes rtis change records and appends them as JSON lines, one file per partition.
#[derive(Parser)]
#[command(name = "rtis-consumer", version)]
struct Cli {
    #[command(flatten)]
    config: rtis::config::ConsumerConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli: Cli = rtis::config::parse_args("rtis-consumer");
    let format = cli.config.log_format;
    rtis::logging::init(format);
    // on a worker thread, next to the runtime's I/O driver (block_on would hop threads per event)
    let run = tokio::spawn(rtis::consumer::run(
        cli.config,
        rtis::logging::shutdown_signal(),
    ));
    match run.await.expect("rtis-consumer task panicked") {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => rtis::logging::fatal("rtis-consumer", format, &e),
    }
}
