//! The scheduler's bookkeeping: which steps wait, which are ready, which finished, and which
//! are skipped because something they depend on failed.
//!
//! A pure data structure in the style of cargo's `dependency_queue.rs`: no I/O, no threads,
//! no clocks. The coordinator asks it for ready nodes and tells it when nodes finish; it must
//! not know what a node *is* (steps, pools and slots live in the coordinator).
//!
//! Semantics worth knowing:
//! - A dependency on a key that is not in the queue counts as already satisfied. `apply` only
//!   puts steps with work into the graph; a build that depends on an Image Builder that is
//!   already present names a fetch step that is not there, and that is the "done" case. Nodes
//!   may be added in any order: adding a node that others already named makes them wait for it
//!   (unless they already started, which only happens if a caller adds nodes mid-run).
//! - Ready nodes come out in insertion order, so runs are reproducible.
//! - When a node fails, every transitive dependent becomes [`NodeState::Skipped`], naming the
//!   node whose failure caused it (the root, not the immediate dependency).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How a started node ended, as far as its dependents care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Failed or cancelled: dependents must not run.
    Failed,
}

/// Where a node is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState<K> {
    /// Some dependency in the queue has not succeeded yet.
    Waiting,
    /// Every dependency succeeded (or is not in the queue); not started.
    Ready,
    Running,
    Succeeded,
    Failed,
    /// Never started because `because` (a failed node) is a transitive dependency.
    Skipped {
        because: K,
    },
    /// Never started because the caller gave up on it ([`DependencyQueue::abandon_pending`]).
    Abandoned,
}

/// A misuse of the queue by its caller (a bug in the plan-to-steps conversion, not user input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueError<K> {
    /// The same key was added twice.
    Duplicate(K),
    /// `finish` was called for a key that is not running.
    NotRunning(K),
}

impl<K: fmt::Debug> fmt::Display for QueueError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Duplicate(key) => write!(f, "step {key:?} was added twice"),
            QueueError::NotRunning(key) => write!(f, "step {key:?} finished but was not running"),
        }
    }
}

/// What changed when a node finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished<K> {
    /// Nodes that became ready, in insertion order.
    pub ready: Vec<K>,
    /// Nodes that became skipped (only after a failure), in insertion order, with the failed
    /// node that caused it.
    pub skipped: Vec<(K, K)>,
}

#[derive(Debug)]
struct Node<K> {
    insertion: usize,
    dependencies: Vec<K>,
    dependents: BTreeSet<K>,
    /// Dependencies that are in the queue and have not succeeded.
    unmet: usize,
    state: NodeState<K>,
}

/// Nodes with dependencies; hands out ready nodes and propagates failures.
#[derive(Debug)]
pub struct DependencyQueue<K: Ord + Clone> {
    nodes: BTreeMap<K, Node<K>>,
    /// Dependents of keys that have not been added (yet): they wait for them once added.
    dependents_of_absent: BTreeMap<K, BTreeSet<K>>,
    /// Ready nodes by insertion number, which is the order they are handed out in.
    ready: BTreeMap<usize, K>,
    running: usize,
    next_insertion: usize,
}

impl<K: Ord + Clone> Default for DependencyQueue<K> {
    fn default() -> Self {
        DependencyQueue {
            nodes: BTreeMap::new(),
            dependents_of_absent: BTreeMap::new(),
            ready: BTreeMap::new(),
            running: 0,
            next_insertion: 0,
        }
    }
}

impl<K: Ord + Clone> DependencyQueue<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `node`, which may start once every dependency in the queue has succeeded.
    pub fn add(
        &mut self,
        node: K,
        dependencies: impl IntoIterator<Item = K>,
    ) -> Result<(), QueueError<K>> {
        if self.nodes.contains_key(&node) {
            return Err(QueueError::Duplicate(node));
        }
        let mut unique = BTreeSet::new();
        let dependencies: Vec<K> = dependencies
            .into_iter()
            .filter(|dependency| unique.insert(dependency.clone()))
            .collect();
        let mut unmet = 0;
        let mut skipped_because = None;
        for dependency in &dependencies {
            match self.nodes.get_mut(dependency) {
                Some(existing) => {
                    existing.dependents.insert(node.clone());
                    match &existing.state {
                        NodeState::Succeeded => {}
                        NodeState::Failed => skipped_because = Some(dependency.clone()),
                        NodeState::Skipped { because } => skipped_because = Some(because.clone()),
                        _ => unmet += 1,
                    }
                }
                None => {
                    self.dependents_of_absent
                        .entry(dependency.clone())
                        .or_default()
                        .insert(node.clone());
                }
            }
        }
        let dependents = self.dependents_of_absent.remove(&node).unwrap_or_default();
        for dependent in &dependents {
            self.add_unmet(dependent);
        }
        let insertion = self.next_insertion;
        self.next_insertion += 1;
        let state = match &skipped_because {
            Some(because) => NodeState::Skipped {
                because: because.clone(),
            },
            None if unmet == 0 => {
                self.ready.insert(insertion, node.clone());
                NodeState::Ready
            }
            None => NodeState::Waiting,
        };
        let entry = Node {
            insertion,
            dependencies,
            dependents,
            unmet,
            state,
        };
        self.nodes.insert(node.clone(), entry);
        if let Some(because) = skipped_because {
            // Nodes that named this one earlier must not wait for it forever.
            self.skip_dependents_of(&node, &because);
        }
        Ok(())
    }

    /// A node that was added later turned out to be a dependency of `dependent`.
    fn add_unmet(&mut self, dependent: &K) {
        let Some(entry) = self.nodes.get_mut(dependent) else {
            return;
        };
        match entry.state {
            NodeState::Ready => {
                self.ready.remove(&entry.insertion);
                entry.state = NodeState::Waiting;
                entry.unmet += 1;
            }
            NodeState::Waiting => entry.unmet += 1,
            // Already started or finished: too late to wait; documented at the top.
            _ => {}
        }
    }

    /// Every node in the queue.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn state(&self, node: &K) -> Option<&NodeState<K>> {
        self.nodes.get(node).map(|entry| &entry.state)
    }

    /// Ready nodes in the order they would be handed out.
    pub fn ready(&self) -> Vec<K> {
        self.ready.values().cloned().collect()
    }

    /// Nodes currently running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// True when nothing waits, is ready or runs: every node has an end state.
    pub fn is_done(&self) -> bool {
        self.running == 0
            && self
                .nodes
                .values()
                .all(|entry| !matches!(entry.state, NodeState::Waiting | NodeState::Ready))
    }

    /// Takes the first ready node (in insertion order) that `can_start` accepts and marks it
    /// running. `can_start` is how the caller applies pool capacity.
    pub fn pop_ready(&mut self, can_start: impl Fn(&K) -> bool) -> Option<K> {
        let (&insertion, node) = self.ready.iter().find(|(_, node)| can_start(node))?;
        let node = node.clone();
        self.ready.remove(&insertion);
        if let Some(entry) = self.nodes.get_mut(&node) {
            entry.state = NodeState::Running;
        }
        self.running += 1;
        Some(node)
    }

    /// Records how a running node ended; returns the nodes that became ready or skipped.
    pub fn finish(&mut self, node: &K, outcome: Outcome) -> Result<Finished<K>, QueueError<K>> {
        let entry = match self.nodes.get_mut(node) {
            Some(entry) if entry.state == NodeState::Running => entry,
            _ => return Err(QueueError::NotRunning(node.clone())),
        };
        let mut finished = Finished {
            ready: Vec::new(),
            skipped: Vec::new(),
        };
        match outcome {
            Outcome::Succeeded => {
                entry.state = NodeState::Succeeded;
                let dependents: Vec<K> = entry.dependents.iter().cloned().collect();
                self.running -= 1;
                for dependent in dependents {
                    if self.satisfy_one(&dependent) {
                        finished.ready.push(dependent);
                    }
                }
                finished.ready.sort_by_key(|key| self.insertion(key));
            }
            Outcome::Failed => {
                entry.state = NodeState::Failed;
                self.running -= 1;
                finished.skipped = self.skip_dependents_of(node, node);
            }
        }
        Ok(finished)
    }

    /// One dependency of `dependent` succeeded; true when that made it ready.
    fn satisfy_one(&mut self, dependent: &K) -> bool {
        let Some(entry) = self.nodes.get_mut(dependent) else {
            return false;
        };
        if entry.state != NodeState::Waiting {
            return false;
        }
        entry.unmet = entry.unmet.saturating_sub(1);
        if entry.unmet > 0 {
            return false;
        }
        entry.state = NodeState::Ready;
        self.ready.insert(entry.insertion, dependent.clone());
        true
    }

    /// Marks every not-yet-started transitive dependent of `start` as skipped because of
    /// `failed` (the root cause).
    fn skip_dependents_of(&mut self, start: &K, failed: &K) -> Vec<(K, K)> {
        let mut skipped = Vec::new();
        let mut stack = vec![start.clone()];
        while let Some(current) = stack.pop() {
            let dependents: Vec<K> = match self.nodes.get(&current) {
                Some(entry) => entry.dependents.iter().cloned().collect(),
                None => continue,
            };
            for dependent in dependents {
                let Some(entry) = self.nodes.get_mut(&dependent) else {
                    continue;
                };
                if !matches!(entry.state, NodeState::Waiting | NodeState::Ready) {
                    continue;
                }
                if entry.state == NodeState::Ready {
                    self.ready.remove(&entry.insertion);
                }
                entry.state = NodeState::Skipped {
                    because: failed.clone(),
                };
                skipped.push((dependent.clone(), failed.clone()));
                stack.push(dependent);
            }
        }
        skipped.sort_by_key(|(key, _)| self.insertion(key));
        skipped
    }

    /// Gives up on every node that has not started (fail-fast, interrupt); returns them in
    /// insertion order. Running nodes are untouched and must still be finished.
    pub fn abandon_pending(&mut self) -> Vec<K> {
        self.ready.clear();
        let mut abandoned: Vec<(usize, K)> = Vec::new();
        for (key, entry) in self.nodes.iter_mut() {
            if matches!(entry.state, NodeState::Waiting | NodeState::Ready) {
                entry.state = NodeState::Abandoned;
                abandoned.push((entry.insertion, key.clone()));
            }
        }
        abandoned.sort();
        abandoned.into_iter().map(|(_, key)| key).collect()
    }

    fn insertion(&self, node: &K) -> usize {
        self.nodes
            .get(node)
            .map_or(usize::MAX, |entry| entry.insertion)
    }

    /// Ok when the dependencies among queued nodes form no cycle; otherwise one cycle, as the
    /// nodes along it: `[a, b]` means `a` depends on `b` and `b` on `a`.
    pub fn check_acyclic(&self) -> Result<(), Vec<K>> {
        let mut order: Vec<(&usize, &K)> = self
            .nodes
            .iter()
            .map(|(key, entry)| (&entry.insertion, key))
            .collect();
        order.sort();
        let mut finished: BTreeSet<&K> = BTreeSet::new();
        for (_, root) in order {
            if !finished.contains(root) {
                self.search_cycle_from(root, &mut finished)?;
            }
        }
        Ok(())
    }

    /// Iterative depth-first search; `path` is the grey set in visiting order.
    fn search_cycle_from<'a>(
        &'a self,
        root: &'a K,
        finished: &mut BTreeSet<&'a K>,
    ) -> Result<(), Vec<K>> {
        let mut path: Vec<&'a K> = vec![root];
        let mut next_child: Vec<usize> = vec![0];
        while let (Some(&current), Some(child)) = (path.last(), next_child.last_mut()) {
            let dependencies = self
                .nodes
                .get(current)
                .map_or(&[][..], |entry| &entry.dependencies[..]);
            let Some(dependency) = dependencies.get(*child) else {
                finished.insert(current);
                path.pop();
                next_child.pop();
                continue;
            };
            *child += 1;
            if !self.nodes.contains_key(dependency) || finished.contains(dependency) {
                continue;
            }
            if let Some(start) = path.iter().position(|node| *node == dependency) {
                return Err(path[start..].iter().map(|node| (*node).clone()).collect());
            }
            path.push(dependency);
            next_child.push(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(edges: &[(u32, &[u32])]) -> DependencyQueue<u32> {
        let mut queue = DependencyQueue::new();
        for (node, dependencies) in edges {
            queue
                .add(*node, dependencies.iter().copied())
                .expect("no duplicates in test graphs");
        }
        queue
    }

    fn pop_all(queue: &mut DependencyQueue<u32>) -> Vec<u32> {
        std::iter::from_fn(|| queue.pop_ready(|_| true)).collect()
    }

    #[test]
    fn diamond_runs_in_dependency_order() {
        let mut queue = queue(&[(4, &[2, 3]), (2, &[1]), (3, &[1]), (1, &[])]);
        assert_eq!(pop_all(&mut queue), vec![1]);
        let finished = queue.finish(&1, Outcome::Succeeded).unwrap();
        assert_eq!(finished.ready, vec![2, 3]);
        assert_eq!(pop_all(&mut queue), vec![2, 3]);
        assert!(
            queue
                .finish(&2, Outcome::Succeeded)
                .unwrap()
                .ready
                .is_empty()
        );
        assert_eq!(queue.state(&4), Some(&NodeState::Waiting));
        assert_eq!(queue.finish(&3, Outcome::Succeeded).unwrap().ready, vec![4]);
        assert!(!queue.is_done());
        assert_eq!(pop_all(&mut queue), vec![4]);
        assert!(!queue.is_done());
        queue.finish(&4, Outcome::Succeeded).unwrap();
        assert!(queue.is_done());
    }

    #[test]
    fn ready_nodes_come_out_in_insertion_order() {
        let mut queue = queue(&[(9, &[]), (3, &[]), (5, &[])]);
        assert_eq!(queue.ready(), vec![9, 3, 5]);
        assert_eq!(pop_all(&mut queue), vec![9, 3, 5]);
    }

    #[test]
    fn capacity_predicate_lets_later_nodes_pass() {
        let mut queue = queue(&[(1, &[]), (2, &[]), (3, &[])]);
        assert_eq!(queue.pop_ready(|node| *node != 1), Some(2));
        assert_eq!(queue.pop_ready(|node| *node != 1), Some(3));
        assert_eq!(queue.pop_ready(|node| *node != 1), None);
        assert_eq!(queue.pop_ready(|_| true), Some(1));
        assert_eq!(queue.running(), 3);
    }

    #[test]
    fn failure_skips_transitive_dependents_naming_the_root() {
        // 1 -> 2 -> 3, 1 -> 4, 5 independent; 6 depends on 5 and 2.
        let mut queue = queue(&[
            (1, &[]),
            (2, &[1]),
            (3, &[2]),
            (4, &[1]),
            (5, &[]),
            (6, &[5, 2]),
        ]);
        assert_eq!(queue.pop_ready(|_| true), Some(1));
        let finished = queue.finish(&1, Outcome::Failed).unwrap();
        assert!(finished.ready.is_empty());
        assert_eq!(finished.skipped, vec![(2, 1), (3, 1), (4, 1), (6, 1)]);
        assert_eq!(queue.state(&3), Some(&NodeState::Skipped { because: 1 }));
        assert_eq!(pop_all(&mut queue), vec![5]);
        assert!(
            queue
                .finish(&5, Outcome::Succeeded)
                .unwrap()
                .ready
                .is_empty()
        );
        assert!(queue.is_done());
    }

    #[test]
    fn dependencies_outside_the_queue_are_satisfied() {
        let mut queue = queue(&[(1, &[100, 200])]);
        assert_eq!(pop_all(&mut queue), vec![1]);
    }

    #[test]
    fn nodes_may_be_added_after_their_dependents() {
        let mut queue = queue(&[(2, &[1]), (3, &[])]);
        assert_eq!(queue.ready(), vec![2, 3]);
        queue.add(1, []).unwrap();
        assert_eq!(queue.ready(), vec![3, 1]);
        assert_eq!(queue.state(&2), Some(&NodeState::Waiting));
    }

    #[test]
    fn adding_after_a_failed_dependency_skips_immediately() {
        let mut queue = queue(&[(1, &[])]);
        queue.pop_ready(|_| true);
        queue.finish(&1, Outcome::Failed).unwrap();
        queue.add(3, [2]).unwrap();
        queue.add(2, [1]).unwrap();
        assert_eq!(queue.state(&2), Some(&NodeState::Skipped { because: 1 }));
        assert_eq!(queue.state(&3), Some(&NodeState::Skipped { because: 1 }));
        assert!(queue.is_done());
    }

    #[test]
    fn duplicates_and_bad_finishes_are_errors() {
        let mut queue = queue(&[(1, &[])]);
        assert_eq!(queue.add(1, []), Err(QueueError::Duplicate(1)));
        assert_eq!(
            queue.finish(&1, Outcome::Succeeded),
            Err(QueueError::NotRunning(1))
        );
        assert_eq!(
            queue.finish(&7, Outcome::Succeeded),
            Err(QueueError::NotRunning(7))
        );
    }

    #[test]
    fn repeated_dependencies_count_once() {
        let mut queue = queue(&[(1, &[]), (2, &[1, 1, 1])]);
        queue.pop_ready(|_| true);
        assert_eq!(queue.finish(&1, Outcome::Succeeded).unwrap().ready, vec![2]);
    }

    #[test]
    fn abandon_pending_leaves_running_nodes() {
        let mut queue = queue(&[(1, &[]), (2, &[1]), (3, &[])]);
        assert_eq!(queue.pop_ready(|_| true), Some(1));
        assert_eq!(queue.abandon_pending(), vec![2, 3]);
        assert!(!queue.is_done());
        let finished = queue.finish(&1, Outcome::Succeeded).unwrap();
        assert!(finished.ready.is_empty());
        assert_eq!(queue.state(&2), Some(&NodeState::Abandoned));
        assert!(queue.is_done());
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        let acyclic = queue(&[(1, &[]), (2, &[1]), (3, &[1, 2]), (4, &[99])]);
        assert_eq!(acyclic.check_acyclic(), Ok(()));
        let cyclic = queue(&[(1, &[]), (2, &[1, 4]), (3, &[2]), (4, &[3])]);
        assert_eq!(cyclic.check_acyclic(), Err(vec![2, 4, 3]));
        let self_loop = queue(&[(1, &[1])]);
        assert_eq!(self_loop.check_acyclic(), Err(vec![1]));
    }

    #[test]
    fn many_nodes_in_layers_all_finish() {
        // 50 layers of 40 nodes; each node depends on every node of the previous layer.
        let layers = 50u32;
        let width = 40u32;
        let mut queue = DependencyQueue::new();
        for layer in (0..layers).rev() {
            for position in 0..width {
                let previous = (0..width).filter(move |_| layer > 0);
                let dependencies = previous.map(|p| (layer - 1) * width + p);
                queue.add(layer * width + position, dependencies).unwrap();
            }
        }
        assert_eq!(queue.check_acyclic(), Ok(()));
        let mut finished_order = Vec::new();
        while let Some(node) = queue.pop_ready(|_| true) {
            finished_order.push(node);
            queue.finish(&node, Outcome::Succeeded).unwrap();
        }
        assert!(queue.is_done());
        assert_eq!(finished_order.len(), (layers * width) as usize);
        let layer_of = |node: &u32| node / width;
        assert!(
            finished_order
                .windows(2)
                .all(|pair| layer_of(&pair[0]) <= layer_of(&pair[1]))
        );
    }
}
