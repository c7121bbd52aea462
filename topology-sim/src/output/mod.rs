//! Ways to show a run: a readable table, JSON, Graphviz DOT and an SVG picture.

mod dot;
mod svg;
mod table;

pub use dot::dot;
pub use svg::svg;
pub use table::table;
