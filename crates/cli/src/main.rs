//! `prophetkv`: the one binary. Subcommands live in their own modules.

mod ablate;
mod config_file;
mod eval;
mod generate;
mod health;
mod ingest;
mod output;
mod runtime;
mod serve;
mod store_args;
mod strategy_args;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// RAG serving with query-driven selective KV recomputation (ProphetKV).
#[derive(Debug, Parser)]
#[command(name = "prophetkv", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a continuation of a prompt with the local model (greedy).
    Generate(generate::GenerateArgs),
    /// Register documents and precompute their KV caches (resumable).
    Ingest(ingest::IngestArgs),
    /// Run the OpenAI-compatible server.
    Serve(Box<serve::ServeArgs>),
    /// Task files for evaluation.
    #[command(subcommand)]
    Tasks(eval::TasksCommand),
    /// Accuracy of strategies × recompute ratios over a task file (resumable).
    Eval(eval::EvalArgs),
    /// Benchmarks of the strategies.
    #[command(subcommand)]
    Bench(eval::BenchCommand),
    /// Variants of the reuse options side by side against full prefill.
    Ablate(ablate::AblateArgs),
    /// Exit 0 when a local server is ready (a container health check).
    Health(health::HealthArgs),
}

fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour only for a person at a terminal, not in a file or a collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve(args) => init_logging(args.log_format == serve::LogFormat::Json, "info"),
        _ => init_logging(false, "warn"),
    }
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Ingest(args) => ingest::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Tasks(command) => eval::tasks(command),
        Command::Eval(args) => eval::eval(args),
        Command::Bench(command) => eval::bench(command),
        Command::Ablate(args) => ablate::run(args),
        Command::Health(args) => health::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and those causes its message does not already include.
            let mut line = String::new();
            for cause in e.chain() {
                let text = cause.to_string();
                let text = text.lines().next().unwrap_or_default();
                if !line.contains(text) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(text);
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
