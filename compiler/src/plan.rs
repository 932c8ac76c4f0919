//! Lowering: a checked block at one point of its space becomes a [`Plan`], the
//! list of sites (method × module) that the runtime executes as it is. The
//! runtime does not re-decide placement; everything it needs is here.

use crate::check::resolve_path;
use crate::check::{Checked, CheckedBlock};
use crate::ir::FusedOp;
use crate::methods::{ArgValue, MethodConfig, Scalar};
use crate::model::{Dims, LayerRole, ModelDesc, Module, ModuleKind, Role};
use crate::task::Task;
use crate::train::TrainConfig;
use peftc_grammar::ast::Placement;
use peftc_grammar::{Diagnostic, Span};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One method applied at one module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub method: MethodConfig,
    /// Checkpoint path of the module.
    pub module: String,
    pub role: Option<Role>,
    pub kind: ModuleKind,
    pub placement: Placement,
    pub gated: bool,
    /// (IA)³ on a feed-forward down projection scales its input, not its output.
    pub feedforward: bool,
    /// Index of the statement (in its block) the site comes from; sites of one
    /// statement share state such as a prefix projection MLP.
    pub statement: usize,
    /// Width of the tensor the method reads and the one it writes.
    pub in_dim: usize,
    pub out_dim: usize,
    /// The fused kernel that runs this site, as the fusion pass decided
    /// (`None`: the method's reference composition runs).
    #[serde(default)]
    pub fusion: Option<FusedOp>,
}

impl Site {
    pub fn layer(&self) -> Option<usize> {
        self.role.and_then(Role::layer)
    }
}

/// What the runtime executes: a model, a task, and the PEFT sites on it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub block: String,
    pub model: ModelDesc,
    pub task: Task,
    /// Base and head modules.
    pub modules: Vec<Module>,
    pub sites: Vec<Site>,
    /// Modules whose existing bias terms train (BitFit, LoRA `bias=`), by path.
    pub trainable_biases: Vec<String>,
    pub train: Option<TrainConfig>,
    pub label_names: Option<Vec<String>>,
    /// The folder the spec's relative paths resolve against.
    pub spec_dir: std::path::PathBuf,
}

impl Plan {
    /// Whether a quantized base stays in its blocks: unless the train block
    /// asks for `base = f32` (inference keeps it packed).
    pub fn base_packed(&self) -> bool {
        self.train
            .as_ref()
            .is_none_or(|t| t.base == crate::train::BaseForm::Packed)
    }

    /// Tokens of text one sequence may hold: unbounded with rotary
    /// positions; with a learned position table (BERT), what the table leaves
    /// after the longest soft prompt.
    pub fn text_positions(&self) -> usize {
        let d = &self.model.dims;
        if d.rope_theta != 0.0 {
            return usize::MAX;
        }
        d.max_positions.saturating_sub(self.virtual_tokens())
    }

    /// Virtual token positions the plan's methods prepend (a soft prompt).
    pub fn virtual_tokens(&self) -> usize {
        self.sites
            .iter()
            .map(|s| s.method.site().virtual_tokens())
            .max()
            .unwrap_or(0)
    }

    pub fn sites_at<'a>(&'a self, module: &'a str) -> impl Iterator<Item = &'a Site> + 'a {
        self.sites.iter().filter(move |s| s.module == module)
    }
}

/// A point of a search space: the value of each search dimension, keyed by
/// `(statement index, argument name)`.
pub type Point = Vec<((usize, String), Scalar)>;

/// Lowers `block` of a checked spec. Search dimensions take their value from
/// `point`; a space block without a point is an error.
/// `init=loftq` on a model without `quantize` (checked on the spec, and
/// again on each search point).
pub(crate) fn loftq_needs_quantize(span: Span) -> Diagnostic {
    Diagnostic::error(
        "`init=loftq` needs a base quantized at load: LoftQ fits the factors to the quantization error",
    )
    .at(span, "LoftQ on a full-precision base")
    .with_help("add `quantize nf4` (or `int8`) to the `model` line")
}

/// A method the model's widths cannot carry (checked on the spec, and again
/// on each search point).
pub(crate) fn misfit(config: &MethodConfig, dims: &Dims, span: Span) -> Option<Diagnostic> {
    let why = config.site().misfit(dims)?;
    Some(
        Diagnostic::error(why)
            .at(span, "does not fit this model")
            .with_help(format!(
                "the backbone: hidden {}, head size {}, intermediate {}",
                dims.hidden, dims.head_dim, dims.intermediate
            )),
    )
}

pub fn lower(
    checked: &Checked,
    block: &CheckedBlock,
    point: Option<&Point>,
) -> Result<Plan, Diagnostic> {
    let model = &checked.model;
    let mut sites = Vec::new();
    let mut biases: BTreeSet<String> = BTreeSet::new();
    for (si, st) in block.statements.iter().enumerate() {
        let args = if st.args.is_space() {
            let Some(point) = point else {
                return Err(Diagnostic::error(format!(
                    "peft block `{}` is a search space; it has no single configuration to compile",
                    block.name
                ))
                .at(st.span, "holds search values")
                .with_help("run `peftc search`, or pick one value per argument"));
            };
            let mut missing = None;
            let a = st.args.at_point(|name, dim| {
                point
                    .iter()
                    .find(|((i, n), _)| *i == si && n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| {
                        missing = Some(name.to_string());
                        first_value(dim)
                    })
            });
            if let Some(name) = missing {
                return Err(Diagnostic::error(format!(
                    "the search point has no value for `{name}`"
                ))
                .at(st.span, ""));
            }
            a
        } else {
            st.args.clone()
        };
        let spec = st.kind.spec();
        let Some(config) = (spec.configure)(&args, st.placement) else {
            continue; // size 0 at this point: the method is absent
        };
        if config.site().loftq().is_some() && model.quantize.is_none() {
            return Err(loftq_needs_quantize(st.span));
        }
        if let Some(d) = misfit(&config, &model.dims, st.span) {
            return Err(d);
        }
        let targets: Vec<&Module> = st.targets.iter().map(|&t| &checked.modules[t]).collect();
        biases.extend(config.biases(&targets, &checked.modules));
        if !config.places_sites() {
            continue;
        }
        for m in config.site_modules(&targets, &checked.modules) {
            let (in_dim, out_dim) = io_dims(model, m);
            sites.push(Site {
                method: config.clone(),
                module: m.path.clone(),
                role: m.role,
                kind: m.kind.clone(),
                placement: st.placement,
                gated: st.gated,
                feedforward: spec.scales_ffn_input
                    && m.role.and_then(Role::layer_role) == Some(LayerRole::MlpDown),
                statement: si,
                in_dim,
                out_dim,
                fusion: None,
            });
        }
    }
    let train = match &checked.train {
        Some(t) if t.args.is_space() && point.is_none() => {
            return Err(Diagnostic::error(
                "`train` holds search values; it has no single configuration",
            )
            .at(t.span, "")
            .with_help("run `peftc search`"));
        }
        Some(t) => {
            let args = t.args.at_point(|name, dim| {
                point
                    .and_then(|p| p.iter().find(|((i, n), _)| *i == usize::MAX && n == name))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| first_value(dim))
            });
            let mut cfg = TrainConfig::from_args(&args, &checked.spec_dir);
            cfg.data = args
                .fixed("data")
                .and_then(|v| v.as_str())
                .map(|d| resolve_path(&checked.spec_dir, d));
            Some(cfg)
        }
        None => None,
    };
    // A bias a site already trains as its own tensor (`full`) is not a
    // second one.
    biases.retain(|b| {
        let name = crate::methods::site_name(b, "bias");
        !sites.iter().any(|s| {
            &s.module == b
                && s.method
                    .site()
                    .tensors(s, &model.dims)
                    .iter()
                    .any(|d| d.name == name)
        })
    });
    let mut plan = Plan {
        block: block.name.clone(),
        model: model.clone(),
        task: checked.task,
        modules: checked.modules.clone(),
        sites,
        trainable_biases: biases.into_iter().collect(),
        train,
        label_names: checked.label_names.clone(),
        spec_dir: checked.spec_dir.clone(),
    };
    record_fusions(&mut plan)?;
    Ok(plan)
}

/// Runs the fusion pass on the plan's graph and records, on each site, the
/// fused kernel that covers it: the one decision the runtime then follows.
fn record_fusions(plan: &mut Plan) -> Result<(), Diagnostic> {
    let graph = crate::ir::build_graph(plan)
        .map_err(|e| Diagnostic::error(format!("internal compiler error: {e}")))?;
    for f in &graph.fusions {
        for &n in &f.nodes {
            if let Some(site) = graph.g[n].site.and_then(|i| plan.sites.get_mut(i)) {
                site.fusion = Some(f.op);
            }
        }
    }
    Ok(())
}

fn first_value(dim: &ArgValue) -> Scalar {
    match dim {
        ArgValue::Fixed { value } => value.clone(),
        ArgValue::Set { values } => values.first().cloned().unwrap_or(Scalar::Unset),
        ArgValue::Range { range } => {
            if range.integer {
                Scalar::Int(range.lo as i64)
            } else {
                Scalar::Float(range.lo)
            }
        }
    }
}

/// Widths of what a method at `m` reads and writes.
fn io_dims(model: &ModelDesc, m: &Module) -> (usize, usize) {
    match m.kind {
        ModuleKind::Linear {
            in_features,
            out_features,
            ..
        } => (in_features, out_features),
        ModuleKind::Embedding { dim, .. } => (dim, dim),
        ModuleKind::LayerNorm { dim } | ModuleKind::RmsNorm { dim } => (dim, dim),
        _ => (model.dims.hidden, model.dims.hidden),
    }
}
