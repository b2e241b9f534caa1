//! The stage graph (petgraph): cycles, topological order, waves.
//!
//! Stages are numbered `0..n`; `needs[i]` lists the stages stage `i` needs. Edges in the
//! petgraph graph point from a need to the stage that needs it, the direction work flows.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

fn build(needs: &[Vec<usize>]) -> DiGraph<(), ()> {
    let mut graph = DiGraph::with_capacity(needs.len(), needs.iter().map(Vec::len).sum());
    for _ in needs {
        graph.add_node(());
    }
    for (stage, its_needs) in needs.iter().enumerate() {
        for &need in its_needs {
            graph.add_edge(NodeIndex::new(need), NodeIndex::new(stage), ());
        }
    }
    graph
}

/// Every cycle, one per strongly connected component, as the stages in `needs` order:
/// `[a, b, c]` means a needs b, b needs c, c needs a.
pub fn cycles(needs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let graph = build(needs);
    let mut found = Vec::new();
    // Kosaraju walks with a stack of its own: petgraph's Tarjan recurses once per stage of a
    // chain, and a chain of 20,000 `needs` overflowed the stack.
    for component in kosaraju_scc(&graph) {
        let first = component[0].index();
        let self_loop = needs[first].contains(&first);
        if component.len() < 2 && !self_loop {
            continue;
        }
        let members: Vec<usize> = component.iter().map(|n| n.index()).collect();
        let start = *members.iter().min().unwrap_or(&first);
        found.push(walk_back_to(start, needs, &members));
    }
    found.sort();
    found
}

/// A shortest path start → … → start along `needs`, staying inside one component.
fn walk_back_to(start: usize, needs: &[Vec<usize>], members: &[usize]) -> Vec<usize> {
    // Membership by index, not by search: a cycle of n stages is found in O(n + edges).
    let mut member = vec![false; needs.len()];
    for &m in members {
        member[m] = true;
    }
    let mut came_from: Vec<Option<usize>> = vec![None; needs.len()];
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for &next in &needs[at] {
            if !member[next] {
                continue;
            }
            if next == start {
                let mut path = vec![at];
                let mut cur = at;
                while cur != start {
                    cur = came_from[cur].unwrap_or(start);
                    path.push(cur);
                }
                path.reverse();
                // path is start … at; the cycle closes with at → start.
                path.dedup();
                return path;
            }
            if came_from[next].is_none() {
                came_from[next] = Some(at);
                queue.push_back(next);
            }
        }
    }
    vec![start]
}

/// A topological order (needs first) that keeps declaration order wherever the graph allows,
/// so plans and logs read in the order the user wrote the stages. `None` if there is a cycle,
/// which validation rules out.
pub fn order(needs: &[Vec<usize>]) -> Option<Vec<usize>> {
    let graph = build(needs);
    let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..needs.len())
        .filter(|&i| waiting[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(needs.len());
    while let Some(Reverse(stage)) = ready.pop() {
        order.push(stage);
        for dependent in graph.neighbors(NodeIndex::new(stage)) {
            let d = dependent.index();
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    (order.len() == needs.len()).then_some(order)
}

/// Which nodes `edges` lead to from `start` (not counting `start` itself unless on a cycle).
pub fn reachable(edges: &[Vec<usize>], start: usize) -> Vec<bool> {
    let mut seen = vec![false; edges.len()];
    let mut stack = edges[start].clone();
    while let Some(n) = stack.pop() {
        if !seen[n] {
            seen[n] = true;
            stack.extend(&edges[n]);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dag_has_no_cycles_and_an_order() {
        // 0 ← 1, 0 ← 2, {1,2} ← 3: a diamond.
        let needs = vec![vec![], vec![0], vec![0], vec![1, 2]];
        assert!(cycles(&needs).is_empty());
        let order = order(&needs).unwrap();
        assert_eq!(order, [0, 1, 2, 3]);
        let pos = |s| order.iter().position(|&x| x == s).unwrap();
        assert!(pos(0) < pos(1) && pos(0) < pos(2) && pos(1) < pos(3) && pos(2) < pos(3));
    }

    #[test]
    fn a_cycle_is_named_in_needs_order() {
        // a(0) needs b(1), b needs c(2), c needs a; d(3) needs a but is not in the cycle.
        let needs = vec![vec![1], vec![2], vec![0], vec![0]];
        assert_eq!(cycles(&needs), vec![vec![0, 1, 2]]);
        assert!(order(&needs).is_none());
    }

    #[test]
    fn two_separate_cycles_are_both_found() {
        let needs = vec![vec![1], vec![0], vec![3], vec![2], vec![]];
        assert_eq!(cycles(&needs), vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn a_self_loop_is_a_cycle() {
        assert_eq!(cycles(&[vec![0]]), vec![vec![0]]);
    }
}
