//! Gradient flow: a node needs the loss's gradient if it holds trainable
//! parameters or reads a node that does. Everything upstream of the first
//! trainable parameter runs forward only.

use super::graph::Graph;

pub(super) fn mark(g: &mut Graph) {
    for n in g.topo() {
        let from_inputs = g.inputs(n).iter().any(|&i| g.g[i].requires_grad);
        let node = &mut g.g[n];
        node.requires_grad = node.trainable_params > 0 || from_inputs;
    }
}
