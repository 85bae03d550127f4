//! `wsfleet-bench`: load scenarios against wsfleet gateways on loopback. Every scenario is
//! bounded in connections and time and stops by itself; `--json` prints a machine-readable
//! report for scripts instead of the human summary.

mod admin;
mod dial;
mod drain;
mod fanout;
mod floor;
mod idle;
mod latency;
mod machine;
mod peer;
mod procstat;
mod scale;
mod sequence;

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "wsfleet-bench", version, about)]
struct Cli {
    /// Print the report as one JSON object instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    /// Also write the JSON report to this file (the summary still goes to stdout).
    #[arg(long, global = true)]
    json_out: Option<std::path::PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open many idle connections: handshake rate/latency, failures, gateway RSS and CPU cost.
    Idle(idle::IdleArgs),
    /// Subscribers over several nodes, one publisher: delivery rate, latency, loss, order.
    Fanout(fanout::FanoutArgs),
    /// Clients on one node that is drained: reconnect curve, time to empty, messages lost.
    Drain(drain::DrainArgs),
    /// Many connections over many gateway and load processes, all receiving one broadcast.
    Scale(scale::ScaleArgs),
    /// A bare epoll acceptor to measure with `idle`: the kernel's share of accepting.
    Floor(floor::FloorArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Idle(args) => {
            // Child processes of `--procs` report to their parent themselves.
            if let Some(report) = idle::run(args).await? {
                output(
                    cli.json,
                    cli.json_out.as_deref(),
                    &report,
                    idle::print_human,
                )?;
            }
        }
        Scenario::Fanout(args) => {
            let total = fanout::message_count(&args)?;
            let report = match args.protocol {
                peer::Protocol::Wsfleet => fanout::run(args, total).await?,
                _ => peer::fanout::run(&args, total).await?,
            };
            output(
                cli.json,
                cli.json_out.as_deref(),
                &report,
                fanout::print_human,
            )?;
        }
        Scenario::Drain(args) => {
            let report = drain::run(args).await?;
            output(
                cli.json,
                cli.json_out.as_deref(),
                &report,
                drain::print_human,
            )?;
        }
        Scenario::Scale(args) => {
            // Load processes report to their parent themselves.
            if let Some(report) = scale::run(args).await? {
                output(
                    cli.json,
                    cli.json_out.as_deref(),
                    &report,
                    scale::print_human,
                )?;
            }
        }
        Scenario::Floor(args) => floor::run(args)?,
    }
    Ok(())
}

fn output<R: serde::Serialize>(
    json: bool,
    json_out: Option<&Path>,
    report: &R,
    human: fn(&R),
) -> Result<()> {
    let text = serde_json::to_string(report)?;
    if let Some(path) = json_out {
        std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{text}")
    } else {
        human(report)
    }
    Ok(())
}
