//! The graph container: ops in a petgraph DAG, each module's anchor, the
//! attention cores, the output and loss, and the fusion pass's record. The
//! passes that fill it live in their own files; `build.rs` runs them.

use super::op::Node;
use super::{IrError, NodeId};
use petgraph::Direction;
use petgraph::stable_graph::StableDiGraph;
use petgraph::visit::EdgeRef;
use std::collections::BTreeMap;

/// Where a module's computation starts and ends in the graph: `entry` produces
/// its input, `exit` its output. PEFT methods attach at these points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub entry: NodeId,
    pub exit: NodeId,
}

/// The forward pass as a DAG; edge weights are input slots.
#[derive(Debug, Clone)]
pub struct Graph {
    pub g: StableDiGraph<Node, u8>,
    /// Module path -> anchor.
    pub anchors: BTreeMap<String, Anchor>,
    /// The attention core (scaled dot-product) of each layer.
    pub attention: Vec<NodeId>,
    /// The loss, for tasks that have one.
    pub loss: Option<NodeId>,
    /// The final output (logits, or hidden states for `feature`).
    pub output: NodeId,
    /// Fused kernels and the nodes each covers, from the fusion pass.
    pub fusions: Vec<super::fuse::Fusion>,
}

impl Graph {
    pub(super) fn new() -> Graph {
        Graph {
            g: StableDiGraph::new(),
            anchors: BTreeMap::new(),
            attention: Vec::new(),
            loss: None,
            output: NodeId::new(0),
            fusions: Vec::new(),
        }
    }

    /// Adds `node` fed by `inputs` (slot = position).
    pub fn add(&mut self, node: Node, inputs: &[NodeId]) -> NodeId {
        let id = self.g.add_node(node);
        for (slot, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i, id, slot as u8);
        }
        id
    }

    /// Inputs of `n`, ordered by slot.
    pub fn inputs(&self, n: NodeId) -> Vec<NodeId> {
        let mut v: Vec<(u8, NodeId)> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, s)| s).collect()
    }

    /// Consumers of `n` with the slot each reads it in.
    pub fn consumers(&self, n: NodeId) -> Vec<(NodeId, u8)> {
        self.g
            .edges_directed(n, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect()
    }

    /// Makes every consumer of `from` (but `except`) read `to` instead.
    pub(super) fn redirect(&mut self, from: NodeId, to: NodeId, except: &[NodeId]) {
        let edges: Vec<_> = self
            .g
            .edges_directed(from, Direction::Outgoing)
            .filter(|e| !except.contains(&e.target()))
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (id, target, slot) in edges {
            self.g.remove_edge(id);
            self.g.add_edge(to, target, slot);
        }
        if self.output == from {
            self.output = to;
        }
    }

    /// Node ids in an order where every node comes after its inputs; among
    /// ready nodes the oldest first, so listings follow the model's own order
    /// and inserted nodes appear just before their first use. Shorter than the
    /// node count if the graph has a cycle.
    pub fn topo(&self) -> Vec<NodeId> {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        let mut pending: HashMap<NodeId, usize> = self
            .g
            .node_indices()
            .map(|n| (n, self.g.edges_directed(n, Direction::Incoming).count()))
            .collect();
        // A node's priority is the earliest original position that needs it, so
        // nodes inserted by passes (high indices) sort just before their use.
        let mut key: HashMap<NodeId, usize> = HashMap::new();
        for n in petgraph::algo::toposort(&self.g, None)
            .unwrap_or_default()
            .into_iter()
            .rev()
        {
            let k = self
                .g
                .edges_directed(n, Direction::Outgoing)
                .filter_map(|e| key.get(&e.target()).copied())
                .fold(n.index(), usize::min);
            key.insert(n, k);
        }
        let key = |n: NodeId| key.get(&n).copied().unwrap_or(n.index());
        let mut ready: BinaryHeap<Reverse<(usize, NodeId)>> = pending
            .iter()
            .filter(|(_, c)| **c == 0)
            .map(|(n, _)| Reverse((key(*n), *n)))
            .collect();
        let mut order = Vec::with_capacity(pending.len());
        while let Some(Reverse((_, n))) = ready.pop() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                if let Some(c) = pending.get_mut(&e.target()) {
                    *c -= 1;
                    if *c == 0 {
                        ready.push(Reverse((key(e.target()), e.target())));
                    }
                }
            }
        }
        order
    }

    pub fn node(&self, n: NodeId) -> &Node {
        &self.g[n]
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    pub(super) fn error(&self, n: NodeId, what: impl Into<String>) -> IrError {
        IrError {
            node: n.index(),
            label: self.g[n].label.clone(),
            what: what.into(),
        }
    }
}
