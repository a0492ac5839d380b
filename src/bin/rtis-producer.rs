//! `rtis-producer`: snapshot + binlog stream of one table into a Kafka topic.
use clap::Parser;

/// Streams every change of a MySQL/MariaDB table from the binlog into Kafka as Avro records.
#[derive(Parser)]
#[command(name = "rtis-producer", version)]
struct Cli {
    #[command(flatten)]
    config: rtis::config::ProducerConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    rtis::logging::init(cli.config.log_format);
    match rtis::pipeline::run(cli.config, rtis::logging::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtis-producer: error: {}", rtis::error::chain(&e));
            std::process::ExitCode::from(2)
        }
    }
}
