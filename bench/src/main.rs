//! `wsfleet-bench`: load scenarios against wsfleet gateways on loopback. Every scenario is
//! bounded in connections and time and stops by itself; `--json` prints a machine-readable
//! report for scripts instead of the human summary.

mod dial;
mod fanout;
mod idle;
mod latency;
mod procstat;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "wsfleet-bench", version, about)]
struct Cli {
    /// Print the report as one JSON object instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open many idle connections: handshake rate/latency, failures, gateway RSS and CPU cost.
    Idle(idle::IdleArgs),
    /// Subscribers over several nodes, one publisher: delivery rate, latency, loss, order.
    Fanout(fanout::FanoutArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Idle(args) => {
            if let Some(report) = idle::run(args).await? {
                if cli.json {
                    println!("{}", serde_json::to_string(&report)?)
                } else {
                    idle::print_human(&report)
                }
            }
        }
        Scenario::Fanout(args) => {
            let report = fanout::run(args).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&report)?)
            } else {
                fanout::print_human(&report)
            }
        }
    }
    Ok(())
}
