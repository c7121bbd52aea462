//! An SVG picture: the top levels of the tree (deeper subtrees summarised as "+N below") and a
//! depth histogram with the optimum marked.

use std::collections::BTreeMap;
use std::fmt::Write;

use treecast_tree::{NodeId, View};

use super::dot::capacity_colour;
use crate::check::subtree_size;
use crate::metrics::Report;

/// Most nodes drawn: levels are added while the picture stays within this.
const MAX_DRAWN: usize = 400;
const LEVEL_H: f64 = 90.0;
const SLOT_W: f64 = 16.0;
const HIST_H: f64 = 220.0;

/// The picture as an SVG document.
pub fn svg(view: &View, report: &Report) -> String {
    let tree = Drawn::of(view);
    let width = (tree.leaves as f64 * SLOT_W + 80.0).max(720.0);
    let tree_h = (tree.levels as f64 + 1.0) * LEVEL_H;
    let height = tree_h + HIST_H + 80.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="12" y="20" font-size="14">treecast: {} viewers attached, max depth {}, optimum {}, seed {}</text>"#,
        report.viewers_attached,
        report.max_depth,
        report
            .optimal_depth
            .map_or("none".to_string(), |d| d.to_string()),
        report.seed
    );
    let scale = (width - 80.0) / (tree.leaves.max(1) as f64);
    let pos = |id: NodeId| -> (f64, f64) {
        let (x, level) = tree.place.get(&id).copied().unwrap_or((0.0, 0));
        (40.0 + x * scale, 50.0 + f64::from(level) * LEVEL_H)
    };
    for &(p, c) in &tree.edges {
        let ((x1, y1), (x2, y2)) = (pos(p), pos(c));
        let _ = writeln!(
            out,
            r##"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="#999"/>"##
        );
    }
    for (&id, &(_, level)) in &tree.place {
        let (x, y) = pos(id);
        let cap = view.get(id).map_or(0, |n| n.capacity);
        let fill = if level == 0 {
            "gold"
        } else {
            capacity_colour(cap)
        };
        let _ = writeln!(
            out,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="6" fill="{fill}" stroke="#333"><title>{} cap {cap} depth {level}</title></circle>"##,
            id.0
        );
        if let Some(below) = tree.below.get(&id) {
            let _ = writeln!(
                out,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="8" transform="rotate(60 {x:.1} {:.1})">+{below} below</text>"#,
                y + 16.0,
                y + 16.0
            );
        }
    }
    histogram(&mut out, report, tree_h + 40.0, width);
    out.push_str("</svg>\n");
    out
}

/// The top levels of the tree, laid out: leaves of the drawn part in depth-first order, each
/// parent centred over its children.
struct Drawn {
    levels: u16,
    leaves: usize,
    /// x (in leaf slots) and level of each drawn node.
    place: BTreeMap<NodeId, (f64, u16)>,
    edges: Vec<(NodeId, NodeId)>,
    /// For drawn nodes at the cut: how many nodes lie below them.
    below: BTreeMap<NodeId, u64>,
}

impl Drawn {
    fn of(view: &View) -> Drawn {
        let mut d = Drawn {
            levels: 0,
            leaves: 0,
            place: BTreeMap::new(),
            edges: Vec::new(),
            below: BTreeMap::new(),
        };
        let Some(root) = view.root() else { return d };
        // Levels breadth-first while the picture stays small.
        let mut levels: Vec<Vec<NodeId>> = vec![vec![root]];
        let mut drawn = 1;
        loop {
            let next: Vec<NodeId> = levels[levels.len() - 1]
                .iter()
                .flat_map(|&p| view.children_of(p).collect::<Vec<_>>())
                .collect();
            if next.is_empty() || drawn + next.len() > MAX_DRAWN {
                break;
            }
            drawn += next.len();
            levels.push(next);
        }
        d.levels = (levels.len() - 1) as u16;
        let cut = d.levels;
        // Depth-first over the drawn part (a loop with a stack): leaves get consecutive slots.
        let mut stack = vec![(root, 0u16)];
        let mut children: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
        while let Some((at, level)) = stack.pop() {
            let kids: Vec<NodeId> = if level < cut {
                view.children_of(at).collect()
            } else {
                Vec::new()
            };
            if kids.is_empty() {
                d.place.insert(at, (d.leaves as f64 + 0.5, level));
                d.leaves += 1;
                if level == cut {
                    let n = subtree_size(view, at) - 1;
                    if n > 0 {
                        d.below.insert(at, n);
                    }
                }
            } else {
                for &k in kids.iter().rev() {
                    stack.push((k, level + 1));
                    d.edges.push((at, k));
                }
                children.insert(at, kids);
            }
        }
        // Parents over their children, deepest level first.
        for level in (0..levels.len()).rev() {
            for &p in &levels[level] {
                if let Some(kids) = children.get(&p) {
                    let xs: Vec<f64> = kids
                        .iter()
                        .filter_map(|k| d.place.get(k))
                        .map(|v| v.0)
                        .collect();
                    let x = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
                    d.place.insert(p, (x, level as u16));
                }
            }
        }
        d
    }
}

fn histogram(out: &mut String, r: &Report, top: f64, width: f64) {
    let _ = writeln!(
        out,
        r#"<text x="12" y="{:.0}" font-size="13">viewers per depth (dashed line: optimum {})</text>"#,
        top,
        r.optimal_depth
            .map_or("none".to_string(), |d| d.to_string())
    );
    let bars = r.depth_histogram.len().max(1);
    let bar_w = ((width - 80.0) / bars as f64).min(60.0);
    let peak = r.depth_histogram.iter().copied().max().unwrap_or(1).max(1) as f64;
    let base = top + HIST_H;
    for (i, &c) in r.depth_histogram.iter().enumerate() {
        let h = (HIST_H - 40.0) * c as f64 / peak;
        let x = 40.0 + i as f64 * bar_w;
        let _ = writeln!(
            out,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#4f83c2"><title>depth {}: {c}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{c}</text>"##,
            base - h,
            bar_w * 0.8,
            i + 1,
            x + bar_w * 0.4,
            base + 14.0,
            i + 1,
            x + bar_w * 0.4,
            base - h - 3.0
        );
    }
    if let Some(o) = r.optimal_depth {
        let x = 40.0 + f64::from(o) * bar_w - bar_w * 0.1;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{base:.1}" stroke="#c33" stroke-dasharray="4 3"/>"##,
            top + 10.0
        );
    }
}
