//! `treecast-sim`: parses flags, runs the scenario, prints the result.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use treecast_sim::cli::{Cli, Format};
use treecast_sim::progress::Bar;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = cli.scenario()?.build()?;
    let mut bar = Bar::new(cli.progress || std::io::stderr().is_terminal());
    let outcome = treecast_sim::run(&cfg, &mut |f| bar.update(f))?;
    bar.finish();
    match cli.format {
        Format::Table => print!("{}", treecast_sim::output::table(&outcome.report)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&outcome.report)?),
        Format::Dot => print!("{}", treecast_sim::output::dot(&outcome.view)),
    }
    if let Some(path) = &cli.svg {
        let svg = treecast_sim::output::svg(&outcome.view, &outcome.report);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    if outcome.report.invariant_violations > 0 {
        anyhow::bail!(
            "{} invariant violations (see the report)",
            outcome.report.invariant_violations
        );
    }
    Ok(())
}
