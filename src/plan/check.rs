//! The checks of the stage graph as declared, each problem at its place: a stage declared
//! twice, `needs:` naming an unknown stage or itself, and cycles (named, with the `needs:` entry
//! that closes each edge). The stage graph itself is [`super::graph`].

use std::collections::{HashMap, HashSet};

use crate::error::{Problem, SourceFile, Span};
use crate::pipeline::StageName;
use crate::plan::graph;

/// A stage as declared, with the places of its name and of each `needs:` entry.
pub(crate) struct Declared<'a> {
    pub(crate) name: &'a StageName,
    pub(crate) needs: &'a [StageName],
    pub(crate) file: &'a SourceFile,
    pub(crate) name_span: Span,
    /// Parallel to `needs`.
    pub(crate) need_spans: &'a [Span],
}

/// A stage declared twice, with both places.
pub(crate) fn duplicates(declared: &[Declared], problems: &mut Vec<Problem>) {
    let mut first: HashMap<&StageName, &Declared<'_>> = HashMap::new();
    for d in declared {
        match first.get(&d.name) {
            Some(earlier) => {
                let problem = Problem::at(
                    d.file,
                    d.name_span,
                    format!("stage `{}` is declared twice", d.name),
                    "declared again here",
                )
                .with_help("rename one of them, or delete one")
                .with_related(Problem::at(
                    earlier.file,
                    earlier.name_span,
                    format!("`{}` first declared here", d.name),
                    "first declaration",
                ));
                problems.push(problem);
            }
            None => {
                first.insert(d.name, d);
            }
        }
    }
}

/// `needs:` entries that name the stage itself or no stage; `all_names` holds every name
/// declared, also of stages with problems (a typo there is not reported twice), and with
/// `files_unread` (a file that did not parse hides its stages) an unknown name is let be.
pub(crate) fn needs(
    declared: &[Declared],
    all_names: &[String],
    files_unread: bool,
    problems: &mut Vec<Problem>,
) {
    let names: Vec<&str> = all_names.iter().map(String::as_str).collect();
    let known: HashSet<&str> = names.iter().copied().collect();
    for d in declared {
        for (need, span) in d.needs.iter().zip(d.need_spans) {
            if need == d.name {
                problems.push(
                    Problem::at(
                        d.file,
                        *span,
                        format!("stage `{need}` needs itself"),
                        "a stage cannot need itself",
                    )
                    .with_help("remove it from `needs`"),
                );
            } else if !known.contains(need.as_str()) && !files_unread {
                let mut problem = Problem::at(
                    d.file,
                    *span,
                    format!("stage `{}` needs `{need}`, which does not exist", d.name),
                    "unknown stage",
                );
                problem = problem.with_suggestion(
                    need.as_str(),
                    names.iter().copied(),
                    format!("stages: {}", names.join(", ")),
                );
                problems.push(problem);
            }
        }
    }
}

/// A cycle's edges shown with their places (a 20,000-stage cycle would draw 20,000 labels).
const SHOWN_EDGES: usize = 12;

/// Each cycle, named in `needs` order (`a → b → a`), with the `needs:` entry of its first
/// [`SHOWN_EDGES`] edges.
pub(crate) fn cycles(declared: &[Declared], problems: &mut Vec<Problem>) {
    let index: HashMap<&StageName, usize> = declared
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name, i))
        .collect();
    let needs: Vec<Vec<usize>> = declared
        .iter()
        .map(|d| {
            d.needs
                .iter()
                .filter_map(|n| index.get(n).copied())
                .collect()
        })
        .collect();
    for cycle in graph::cycles(&needs) {
        let path: Vec<&str> = cycle
            .iter()
            .chain(cycle.first())
            .map(|&i| declared[i].name.as_str())
            .collect();
        // A long cycle is named by its first stages; each of its `needs:` is still one edit
        // away, and the first few are shown where they are.
        let named = if path.len() > SHOWN_EDGES + 1 {
            format!(
                "{} → … ({} stages in all)",
                path[..SHOWN_EDGES].join(" → "),
                cycle.len()
            )
        } else {
            path.join(" → ")
        };
        let message = format!("the stages need each other in a cycle: {named}");
        // One label per `needs:` entry that closes an edge of the cycle.
        let edges: Vec<(usize, usize)> = cycle
            .iter()
            .zip(cycle.iter().cycle().skip(1))
            .map(|(&a, &b)| (a, b))
            .take(SHOWN_EDGES)
            .collect();
        let mut primary: Option<Problem> = None;
        let mut others = Vec::new();
        for (a, b) in edges {
            let d = &declared[a];
            let Some(pos) = d.needs.iter().position(|n| n == declared[b].name) else {
                continue;
            };
            let span = d.need_spans[pos];
            let label = format!("`{}` needs `{}`", d.name, declared[b].name);
            match &mut primary {
                None => primary = Some(Problem::at(d.file, span, message.clone(), label)),
                Some(p) if p.place().is_some_and(|place| place.file == d.file.name) => {
                    *p = std::mem::replace(p, Problem::general("")).with_label(span, label);
                }
                Some(_) => {
                    others.push(Problem::at(d.file, span, "…which continues here", label));
                }
            }
        }
        if let Some(mut problem) = primary {
            problem = problem.with_help("remove one of these `needs` to break the cycle");
            for other in others {
                problem = problem.with_related(other);
            }
            problems.push(problem);
        }
    }
}
