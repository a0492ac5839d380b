//! `rtis-producer`: snapshot + binlog stream of one table into a Kafka topic; `status` and
//! `reset` for operators.
use clap::Parser;

/// Streams every change of a MySQL/MariaDB table from the binlog into Kafka as Avro records.
#[derive(Parser)]
#[command(
    name = "rtis-producer",
    version,
    after_help = "Operator commands: `rtis-producer status --help`, `rtis-producer reset --help`."
)]
struct Cli {
    #[command(flatten)]
    config: rtis::config::ProducerConfig,
}

/// Operator commands on a producer's state file.
#[derive(Parser)]
#[command(name = "rtis-producer", version)]
struct Admin {
    #[command(subcommand)]
    command: rtis::admin::AdminCommand,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let first = std::env::args_os().nth(1);
    if matches!(
        first.as_deref().and_then(|a| a.to_str()),
        Some("status" | "reset")
    ) {
        let admin = Admin::parse();
        let out = match &admin.command {
            rtis::admin::AdminCommand::Status(a) => rtis::admin::status(a),
            rtis::admin::AdminCommand::Reset(a) => rtis::admin::reset(a).await.map(|s| s + "\n"),
        };
        return match out {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            // operator commands log nothing: the plain error line only
            Err(e) => rtis::logging::fatal("rtis-producer", rtis::config::LogFormat::Text, &e),
        };
    }
    let cli: Cli = rtis::config::parse_args("rtis-producer");
    let format = cli.config.log_format;
    rtis::logging::init(format);
    // on a worker thread, next to the runtime's I/O driver (block_on would hop threads per event)
    let run = tokio::spawn(rtis::pipeline::run(
        cli.config,
        rtis::logging::shutdown_signal(),
    ));
    match run.await.expect("rtis-producer task panicked") {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => rtis::logging::fatal("rtis-producer", format, &e),
    }
}
