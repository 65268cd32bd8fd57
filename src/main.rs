//! The `berth` command line: parses the arguments and runs one of the library's commands
//! (`berth::app::commands`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use berth::app::{commands, entrypoint};

/// A container image registry: a drop-in replacement for CNCF distribution (registry:2).
#[derive(Parser)]
#[command(name = "berth", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry. Without CONFIG: filesystem storage in ./data on :5000, no auth, delete disabled.
    Serve {
        /// A distribution (registry:2) config.yml; REGISTRY_* environment variables override its keys.
        config: Option<PathBuf>,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print an htpasswd entry with a bcrypt hash, as `htpasswd -Bbn USER PASSWORD` does.
    Htpasswd {
        /// Use bcrypt (the only hash berth accepts; always on).
        #[arg(short = 'B')]
        bcrypt: bool,
        /// Take the password from the command line instead of prompting (or reading standard input).
        #[arg(short = 'b')]
        batch: bool,
        /// Print the entry on standard output (the only mode).
        #[arg(short = 'n')]
        stdout: bool,
        /// bcrypt cost (4 to 31).
        #[arg(short = 'C', default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
        user: String,
        /// With -b: the password.
        password: Option<String>,
    },
    /// Make a CA and a server certificate for TLS (and optionally a client certificate for mTLS).
    Cert {
        /// An IP address the registry is reached at (repeatable).
        #[arg(long = "host")]
        hosts: Vec<std::net::IpAddr>,
        /// A DNS name the registry is reached at (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Directory to write ca.crt, server.crt and server.key into.
        #[arg(long)]
        out: PathBuf,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Also write client.cert and client.key for a client of this name, signed by the same CA.
        #[arg(long)]
        client: Option<String>,
        /// The port clients use, for the certs.d path printed at the end.
        #[arg(long, default_value_t = 5000)]
        port: u16,
    },
    /// Remove blobs that no manifest references, as `registry garbage-collect` does. Run it with the
    /// registry stopped, or use the online collection of `berth serve` (`berth.gc` in the configuration).
    GarbageCollect {
        /// The registry's config.yml (REGISTRY_* environment variables override its keys).
        config: PathBuf,
        /// Report what would be removed; remove nothing.
        #[arg(short = 'd', long)]
        dry_run: bool,
        /// Also remove manifests that no tag reaches (a tagged index keeps its children, a kept manifest
        /// its referrers).
        #[arg(short = 'm', long)]
        delete_untagged: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration (with REGISTRY_* overrides applied) and print the effective settings,
    /// secrets masked.
    Check {
        /// The config.yml to check; without it, the embedded default.
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // As `/bin/registry` (or `/bin/htpasswd`) in the container image, read the arguments as registry:2's
    // image does.
    let cli = Cli::parse_from(entrypoint::args(std::env::args_os()));
    let result = match cli.command {
        Command::Serve { config } => commands::serve(config.as_deref()),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => commands::check(config.as_deref()),
        Command::Htpasswd {
            batch,
            cost,
            user,
            password,
            ..
        } => commands::htpasswd(batch, cost, &user, password),
        Command::Cert {
            hosts,
            dns,
            out,
            days,
            client,
            port,
        } => commands::cert(&commands::CertRequest {
            hosts: &hosts,
            dns: &dns,
            out: &out,
            days,
            client: client.as_deref(),
            port,
        }),
        Command::GarbageCollect {
            config,
            dry_run,
            delete_untagged,
        } => commands::garbage_collect(&config, dry_run, delete_untagged),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}
