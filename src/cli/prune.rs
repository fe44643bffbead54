//! `layerforge prune NAME --keep N [--older-than DAYS] [--include-shared] [--dry-run] [--json]`: deletes the old
//! versions of a layer, never the latest and never one a function of this account and region references
//! ([`crate::prune`], DESIGN section 14). Prints one line per version: kept (and why, with the functions that use
//! it), deleted, or would delete.

use clap::Args;

use super::context::{Context, print_json};
use super::error::CliError;
use crate::prune::{self, Policy};

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The layer name.
    pub name: String,
    /// Keep this many of the newest versions (the newest, and the newest of each runtime and architecture, are
    /// always kept).
    #[arg(long, value_name = "N")]
    pub keep: usize,
    /// Delete only versions older than this many days.
    #[arg(long, value_name = "DAYS")]
    pub older_than: Option<u64>,
    /// Also delete versions shared with other accounts (their functions can't be seen from here).
    #[arg(long)]
    pub include_shared: bool,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(target: &super::context::Target, args: PruneArgs) -> Result<u8, CliError> {
    let ctx = Context::new(target).await?;
    let lambda = aws_sdk_lambda::Client::new(&ctx.sdk);
    let policy = Policy {
        keep: args.keep,
        older_than_days: args.older_than,
        include_shared: args.include_shared,
        dry_run: args.dry_run,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let report = prune::prune(&lambda, &args.name, &policy, now)
        .await
        .map_err(|e| CliError::Aws(e.to_string()))?;
    if args.json {
        print_json(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        for fate in &report.versions {
            let functions = if fate.functions.is_empty() {
                String::new()
            } else {
                format!(" ({})", fate.functions.join(", "))
            };
            println!(
                "{:>5} {:<12} {}{functions}",
                fate.version, fate.decision, fate.reason
            );
        }
        eprintln!(
            "{}: {} kept, {} {}",
            report.layer_name,
            report.count("kept"),
            report.count(if args.dry_run {
                "would delete"
            } else {
                "deleted"
            }),
            if args.dry_run {
                "would be deleted (dry run)"
            } else {
                "deleted"
            }
        );
    }
    Ok(0)
}
