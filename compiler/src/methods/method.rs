//! What every method provides about a site it sits on, behind one trait the
//! other layers call: its tensors, how it enters the graph, what it can do
//! beyond training. `table.rs` maps each configuration to its
//! implementation with one exhaustive match.

use super::tensors::TensorDecl;
use crate::ir::Op;
use crate::model::Dims;
use crate::plan::Site;

/// How a method's node is wired into the graph at its module's anchor
/// (`x`: the module's input, `y`: its output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// `y + op(x)`: a delta beside the module, summed into its output.
    DeltaSum,
    /// `op(x, y)`: reads the module's input and output, replaces the output.
    InputAndOutput,
    /// `op(y)`: applied to the module's output.
    Output,
    /// `module(op(x))`: applied to the module's input on its edge only.
    Input,
    /// Feeds the attention core's prefix slot.
    AttentionKv,
    /// No node of its own: the method trains the module's own tensors (LN
    /// tuning's norm weights), so they count on the module's node.
    Own,
    /// A side network's step (LST): `op(y, s)` reads the module's output
    /// and the side state before it (at the statement's first site, the
    /// module's input) and writes the next side state; it feeds no module.
    /// The statement's last step is closed by a projection from the side
    /// width back to the model's (`op`'s `out_f` → `in_f`), added to the
    /// model's last layer output.
    Ladder,
}

/// A method's node at one site.
#[derive(Debug, Clone, PartialEq)]
pub struct Lowering {
    pub op: Op,
    pub wiring: Wiring,
}

/// What a method at a site can do beyond training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Folds into the base weights (`peftc merge`, `infer --merged`).
    pub merge: bool,
    /// Hugging Face PEFT has the method: `peftc export --format hf` writes it
    /// and `--adapter HF_DIR` reads it.
    pub hf: bool,
    /// Serves beside other adapters of the same spec in one batch (SGMV).
    pub routable: bool,
}

/// One method's knowledge of its sites.
pub trait SiteMethod {
    /// Short name (`lora`, `dora`, `ia3`, ...).
    fn name(&self) -> &'static str;

    /// The tensors one site declares.
    fn tensors(&self, site: &Site, dims: &Dims) -> Vec<TensorDecl>;

    /// Tensors the sites of one statement share (a prefix projection MLP),
    /// declared once.
    fn shared_tensors(&self, _statement: &[&Site], _dims: &Dims) -> Vec<TensorDecl> {
        Vec::new()
    }

    /// Its node in the graph; `None` for methods that add no node (BitFit's
    /// biases live in the base ops they already are).
    fn lowering(&self, site: &Site, dims: &Dims) -> Option<Lowering>;

    fn capabilities(&self, site: &Site) -> Capabilities;

    /// A second, smaller set of tensors that computes the same (P-tuning's
    /// encoder output, as HF saves it): an adapter holding exactly these
    /// loads for inference.
    fn inference_tensors(&self, _site: &Site, _dims: &Dims) -> Option<Vec<TensorDecl>> {
        None
    }

    /// Virtual token positions the method prepends to every sequence (a
    /// soft prompt's length).
    fn virtual_tokens(&self) -> usize {
        0
    }

    /// Text whose token embeddings initialize the method's tensors
    /// ([`Init::EmbeddingRows`](super::Init::EmbeddingRows)), if any.
    fn init_text(&self) -> Option<&str> {
        None
    }

    /// Why a backbone of `dims` cannot carry the method, if it cannot (an
    /// LST reduction that does not divide its widths): an error at the
    /// statement.
    fn misfit(&self, _dims: &Dims) -> Option<String> {
        None
    }

    /// LoftQ initialization of this site's factors, if asked for: the base
    /// must be quantized at load (`model "..." quantize nf4`).
    fn loftq(&self) -> Option<Loftq> {
        None
    }
}

/// A site's LoftQ initialization: rank and alternations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loftq {
    pub r: usize,
    pub iters: usize,
}

/// A UniPELT gate's tensors (`{module}.{tag}_gate.weight` `[1, width]`,
/// `.bias` `[1]`), uniform in ±1/√width like `nn.Linear(width, 1)`.
pub fn gate_tensors(site: &Site, tag: &str, width: usize) -> Vec<TensorDecl> {
    use super::tensors::{Init, site_name};
    if !site.gated {
        return Vec::new();
    }
    let b = 1.0 / (width as f32).sqrt();
    vec![
        TensorDecl::trainable(
            site_name(&site.module, &format!("{tag}_gate.weight")),
            vec![1, width],
            Init::Uniform(b),
        ),
        TensorDecl::trainable(
            site_name(&site.module, &format!("{tag}_gate.bias")),
            vec![1],
            Init::Uniform(b),
        ),
    ]
}
