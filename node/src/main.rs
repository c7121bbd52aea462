//! The `treecast` binary: parses arguments, sets up tracing and calls the library.

fn main() -> anyhow::Result<()> {
    println!("treecast {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
