//! The `treecast-signal` binary.

fn main() -> anyhow::Result<()> {
    println!(
        "treecast-signal {}: not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}
