//! Graphviz DOT: every agreed parent -> child edge, nodes shaded by capacity.

use std::fmt::Write;

use treecast_tree::View;

/// The tree as a DOT digraph (`dot -Tsvg` draws it; for big trees try `sfdp`).
pub fn dot(view: &View) -> String {
    let mut out = String::from(
        "digraph treecast {\n  graph [rankdir=TB];\n  node [shape=circle, style=filled, fontsize=8];\n",
    );
    let root = view.root();
    for n in view.nodes() {
        let fill = if Some(n.id) == root {
            "gold"
        } else {
            capacity_colour(n.capacity)
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\ncap {}\", fillcolor=\"{fill}\"];",
            n.id.0, n.id.0, n.capacity
        );
    }
    for n in view.nodes() {
        for c in view.children_of(n.id) {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", n.id.0, c.0);
        }
    }
    out.push_str("}\n");
    out
}

/// Fill colours by capacity, shared with the SVG picture: stronger is darker.
pub(crate) fn capacity_colour(capacity: u8) -> &'static str {
    match capacity {
        0 => "#e8eef7",
        1 => "#bcd0ea",
        2 => "#86abd9",
        3 => "#4f83c2",
        _ => "#1f5aa6",
    }
}
