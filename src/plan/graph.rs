//! The plan's dependency graph: a petgraph DAG over the actions, checked for cycles once and
//! put in topological order. `apply` derives the executor's steps from it, selections take
//! their dependency closures from it, and `imagegen graph` prints it (DOT for Graphviz, or
//! nodes and edges as JSON). Pure: no I/O.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use super::model::{Action, ActionKind, Plan, Resource};
use crate::error::{Error, Result};

/// A plan's actions as a DAG; an edge runs from a dependency to its dependent.
#[derive(Debug)]
pub struct PlanGraph<'p> {
    plan: &'p Plan,
    /// Node weights are indexes into `plan.actions`.
    graph: DiGraph<usize, ()>,
    nodes: BTreeMap<&'p str, NodeIndex>,
    /// Indexes into `plan.actions`, every dependency before its dependents, otherwise in
    /// plan order.
    order: Vec<usize>,
}

/// `imagegen graph --json`: every action and every dependency edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphJson {
    pub fleet: String,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    pub address: String,
    pub resource: Resource,
    pub action: ActionKind,
}

/// `dependent` needs `dependency` first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEdge {
    pub dependent: String,
    pub dependency: String,
}

impl<'p> PlanGraph<'p> {
    /// Builds the graph of `plan`. Two actions with one address, or actions that depend on
    /// each other in a circle, are a bug in planning (an internal error naming them).
    /// A dependency on an address that is not in the plan (outside a selection) is ignored.
    pub fn new(plan: &'p Plan) -> Result<PlanGraph<'p>> {
        let mut graph = DiGraph::with_capacity(plan.actions.len(), plan.actions.len());
        let mut nodes = BTreeMap::new();
        for (index, action) in plan.actions.iter().enumerate() {
            if nodes
                .insert(action.address.as_str(), graph.add_node(index))
                .is_some()
            {
                return Err(Error::internal(format!(
                    "the plan has two actions `{}`",
                    action.address
                )));
            }
        }
        for action in &plan.actions {
            let dependent = nodes[action.address.as_str()];
            let unique: BTreeSet<&str> = action.depends_on.iter().map(String::as_str).collect();
            for dependency in unique {
                if let Some(&from) = nodes.get(dependency) {
                    graph.add_edge(from, dependent, ());
                }
            }
        }
        if petgraph::algo::toposort(&graph, None).is_err() {
            return Err(cycle_error(plan, &graph));
        }
        let order = stable_order(&graph);
        Ok(PlanGraph {
            plan,
            graph,
            nodes,
            order,
        })
    }

    /// The actions, every dependency before its dependents.
    pub fn in_order(&self) -> impl Iterator<Item = &'p Action> + '_ {
        self.order.iter().map(|index| &self.plan.actions[*index])
    }

    /// The direct dependencies of an action that are in the plan, in plan order.
    pub fn dependencies(&self, address: &str) -> Vec<&'p str> {
        self.neighbors(address, Direction::Incoming)
    }

    /// The actions that depend directly on `address`, in plan order.
    pub fn dependents(&self, address: &str) -> Vec<&'p str> {
        self.neighbors(address, Direction::Outgoing)
    }

    fn neighbors(&self, address: &str, direction: Direction) -> Vec<&'p str> {
        let Some(&node) = self.nodes.get(address) else {
            return Vec::new();
        };
        let mut indexes: Vec<usize> = self
            .graph
            .neighbors_directed(node, direction)
            .map(|neighbor| self.graph[neighbor])
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        indexes
            .into_iter()
            .map(|index| self.plan.actions[index].address.as_str())
            .collect()
    }

    /// `roots` and everything they depend on, transitively (Terraform's `-target`).
    pub fn with_dependencies<'a>(
        &self,
        roots: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<&'p str> {
        let mut closure = BTreeSet::new();
        let mut stack: Vec<NodeIndex> = roots
            .into_iter()
            .filter_map(|root| self.nodes.get(root).copied())
            .collect();
        while let Some(node) = stack.pop() {
            let address = self.plan.actions[self.graph[node]].address.as_str();
            if closure.insert(address) {
                stack.extend(self.graph.neighbors_directed(node, Direction::Incoming));
            }
        }
        closure
    }

    /// The graph as JSON: nodes in plan order, edges sorted.
    pub fn to_json(&self) -> GraphJson {
        let nodes = self
            .plan
            .actions
            .iter()
            .map(|action| GraphNode {
                address: action.address.clone(),
                resource: action.resource,
                action: action.action,
            })
            .collect();
        GraphJson {
            fleet: self.plan.fleet.clone(),
            nodes,
            edges: self.edges(),
        }
    }

    fn edges(&self) -> Vec<GraphEdge> {
        let mut edges: Vec<GraphEdge> = self
            .graph
            .edge_indices()
            .filter_map(|edge| self.graph.edge_endpoints(edge))
            .map(|(from, to)| GraphEdge {
                dependent: self.plan.actions[self.graph[to]].address.clone(),
                dependency: self.plan.actions[self.graph[from]].address.clone(),
            })
            .collect();
        edges.sort_by(|a, b| (&a.dependent, &a.dependency).cmp(&(&b.dependent, &b.dependency)));
        edges
    }

    /// The graph in Graphviz DOT, like `terraform graph`: one node per action labelled with
    /// what the plan does to it, edges from each action to what it depends on.
    /// `imagegen graph | dot -Tsvg > graph.svg` draws it.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph imagegen {\n");
        out.push_str("  compound = \"true\"\n  newrank = \"true\"\n  rankdir = \"RL\"\n");
        let _ = writeln!(
            out,
            "  label = {}\n  node [shape = \"box\"]",
            dot_string(&format!("fleet {}", self.plan.fleet))
        );
        for action in &self.plan.actions {
            let label = format!("{}\n({})", action.address, action_word(action));
            let style = match action.action {
                ActionKind::NoOp => ", style = \"dashed\"",
                ActionKind::Skip => ", style = \"dotted\"",
                _ => "",
            };
            let _ = writeln!(
                out,
                "  {} [label = {}{style}]",
                dot_string(&action.address),
                dot_string(&label)
            );
        }
        for edge in self.edges() {
            let _ = writeln!(
                out,
                "  {} -> {}",
                dot_string(&edge.dependent),
                dot_string(&edge.dependency)
            );
        }
        out.push_str("}\n");
        out
    }
}

/// A topological order that keeps the plan's own order wherever the dependencies allow
/// (Kahn's algorithm taking the earliest ready action first), so runs are reproducible and
/// the first of several builds with one key is the first in the fleet. Only called on an
/// acyclic graph.
fn stable_order(graph: &DiGraph<usize, ()>) -> Vec<usize> {
    let mut waiting: Vec<usize> = graph
        .node_indices()
        .map(|node| {
            graph
                .neighbors_directed(node, Direction::Incoming)
                .collect::<BTreeSet<_>>()
                .len()
        })
        .collect();
    let mut ready: BinaryHeap<Reverse<(usize, NodeIndex)>> = graph
        .node_indices()
        .filter(|node| waiting[node.index()] == 0)
        .map(|node| Reverse((graph[node], node)))
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(Reverse((index, node))) = ready.pop() {
        order.push(index);
        let dependents: BTreeSet<NodeIndex> = graph
            .neighbors_directed(node, Direction::Outgoing)
            .collect();
        for dependent in dependents {
            waiting[dependent.index()] -= 1;
            if waiting[dependent.index()] == 0 {
                ready.push(Reverse((graph[dependent], dependent)));
            }
        }
    }
    order
}

fn action_word(action: &Action) -> &'static str {
    match action.action {
        ActionKind::Create => "create",
        ActionKind::Replace => "replace",
        ActionKind::NoOp => "no-op",
        ActionKind::Skip => "skip",
        ActionKind::Remove => "remove",
    }
}

/// A DOT double-quoted string: backslashes and quotes escaped, newlines as `\n`.
fn dot_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

/// Names one cycle of a graph that has one: the strongly connected component with more than
/// one node (or a node depending on itself), in plan order.
fn cycle_error(plan: &Plan, graph: &DiGraph<usize, ()>) -> Error {
    let component = petgraph::algo::tarjan_scc(graph)
        .into_iter()
        .find(|component| {
            component.len() > 1
                || component
                    .first()
                    .is_some_and(|node| graph.contains_edge(*node, *node))
        })
        .unwrap_or_default();
    let mut indexes: Vec<usize> = component.iter().map(|node| graph[*node]).collect();
    indexes.sort_unstable();
    let names: Vec<String> = indexes
        .iter()
        .map(|index| format!("`{}`", plan.actions[*index].address))
        .collect();
    Error::internal(format!(
        "the plan's actions depend on each other in a cycle: {}",
        names.join(", ")
    ))
    .with_help("this is a bug in imagegen; please report it with the plan (`imagegen plan --json`)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::{FORMAT_VERSION, Fingerprint, Summary};

    fn action(address: &str, depends_on: &[&str]) -> Action {
        Action {
            address: address.into(),
            resource: Resource::Build,
            action: ActionKind::Create,
            key: None,
            previous_key: None,
            reasons: Vec::new(),
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
            same_inputs_as: None,
            cache_hit: false,
            profile_id: None,
            device_id: None,
            builder: None,
            inputs: None,
            details: BTreeMap::new(),
            packages: None,
        }
    }

    fn plan(actions: Vec<Action>) -> Plan {
        Plan {
            format_version: FORMAT_VERSION.into(),
            fleet: "lab".into(),
            actions,
            summary: Summary::default(),
            fingerprint: Fingerprint::default(),
            offline_needs: Vec::new(),
            notices: Vec::new(),
            selection: None,
            allow_flash: Default::default(),
        }
    }

    #[test]
    fn orders_dependencies_first_and_closes_over_them() {
        let plan = plan(vec![
            action("flash.d", &["build.b"]),
            action("build.b", &["builder.x", "build.a"]),
            action("build.a", &["builder.x"]),
            action("builder.x", &[]),
            action("build.other", &["outside.selection"]),
        ]);
        let graph = PlanGraph::new(&plan).unwrap();
        let order: Vec<&str> = graph.in_order().map(|a| a.address.as_str()).collect();
        assert_eq!(
            order,
            ["builder.x", "build.a", "build.b", "flash.d", "build.other"],
            "dependencies first, plan order otherwise"
        );
        assert_eq!(graph.dependencies("build.b"), vec!["build.a", "builder.x"]);
        assert_eq!(graph.dependents("builder.x"), vec!["build.b", "build.a"]);
        let closure: Vec<&str> = graph.with_dependencies(["flash.d"]).into_iter().collect();
        assert_eq!(closure, vec!["build.a", "build.b", "builder.x", "flash.d"]);
        assert_eq!(graph.to_json().edges.len(), 4);
    }

    #[test]
    fn a_cycle_is_an_internal_error_naming_it() {
        let plan = plan(vec![
            action("build.a", &["build.c"]),
            action("build.b", &["build.a"]),
            action("build.c", &["build.b"]),
            action("build.d", &[]),
        ]);
        let error = PlanGraph::new(&plan).unwrap_err();
        assert_eq!(error.code, crate::error::ErrorCode::InternalError);
        assert_eq!(
            error.message,
            "the plan's actions depend on each other in a cycle: `build.a`, `build.b`, `build.c`"
        );
        let looped = super::super::model::Plan {
            actions: vec![action("build.a", &["build.a"])],
            ..plan
        };
        assert!(PlanGraph::new(&looped).is_err());
    }

    #[test]
    fn dot_quotes_addresses_and_points_at_dependencies() {
        let plan = plan(vec![
            action("builder.23.05.4/x86/64", &[]),
            action("build.lab.\"odd\"", &["builder.23.05.4/x86/64"]),
        ]);
        let dot = PlanGraph::new(&plan).unwrap().to_dot();
        assert!(dot.starts_with("digraph imagegen {\n"), "{dot}");
        assert!(
            dot.contains("  \"build.lab.\\\"odd\\\"\" -> \"builder.23.05.4/x86/64\"\n"),
            "{dot}"
        );
        assert!(
            dot.contains("[label = \"builder.23.05.4/x86/64\\n(create)\"]"),
            "{dot}"
        );
        assert!(dot.ends_with("}\n"));
    }
}
