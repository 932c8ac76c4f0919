//! Sparse masks (the survey's selective fine-tuning, §3.2): a linear layer's
//! frozen weight trains a chosen subset of its entries as a delta,
//! `y + x·ΔWᵀ` with `ΔW` zero outside the subset.
//!
//! - `structure=element`: `round(density · out · in)` single entries (diff
//!   pruning's and FishMask's unit); `row` / `column`: that fraction of whole
//!   output rows or input columns (FAR's FFN neurons are rows of `mlp.up`).
//! - `by`: how the subset is chosen before training — `random` (seeded),
//!   `magnitude` (largest |w|, or row / column norm), `fisher` (FishMask:
//!   largest squared gradient summed over `calib` batches of the training data),
//!   `lt_sft` (LT-SFT: a dense fine-tune of `warmup_steps` steps, keep what
//!   moved most, rewind, train only that), `diff_pruning` (a dense delta under
//!   a learned hard-concrete L0 gate per entry for `warmup_steps` steps, its
//!   penalty annealed until the expected density is the target; the largest
//!   gated entries are kept with their values).
//!
//! `r = K` instead of a density gives each layer `K·(in + out)` entries, a
//! LoRA's budget — Hugging Face PEFT's SHiRA, which `mask(r=K, by=random)`
//! exports to.
//!
//! Storage is sparse: the values trained (`mask_values`) and their positions
//! (`mask_index`, frozen, sorted ascending), so memory, optimizer state and the
//! adapter file grow with the entries chosen, not with the weight.

use super::args::{ArgValue, Args};
use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{ArgSpec, ArgType, Default, MethodSpec, ON, SIZE, TargetKind, choice, float};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, TensorKind, site_name};
use crate::ir::{DeltaCost, Op};
use crate::model::{Dims, Module, ModuleKind};
use crate::plan::Site;
use peftc_grammar::{Diagnostic, Span};
use serde::{Deserialize, Serialize};

/// How the trained subset is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskBy {
    Random,
    Magnitude,
    Fisher,
    LtSft,
    DiffPruning,
}

impl MaskBy {
    /// Dense f32 copies of each targeted weight its selection phase holds
    /// before training (the estimator's `selection` component), as counted
    /// and checked against measured peaks (`benches/selective/run`):
    /// FishMask — the gradient, its square, the running sum and the host
    /// copy (4); LT-SFT — the dense delta, its gradient, AdamW's two
    /// moments and the rewind copy (5); diff pruning — the delta and the
    /// gate's logits with their gradients and moments (8) and the
    /// hard-concrete's transients (about 9 more, measured: 17).
    pub fn dense_copies(self) -> u64 {
        match self {
            MaskBy::Random | MaskBy::Magnitude => 0,
            MaskBy::Fisher => 4,
            MaskBy::LtSft => 5,
            MaskBy::DiffPruning => 17,
        }
    }
}

impl MaskBy {
    /// Chosen after a dense warm-up phase (LT-SFT, diff pruning).
    pub fn warms_up(self) -> bool {
        match self {
            MaskBy::LtSft | MaskBy::DiffPruning => true,
            MaskBy::Random | MaskBy::Magnitude | MaskBy::Fisher => false,
        }
    }
}

/// What one selected unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskStructure {
    Element,
    Row,
    Column,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskConfig {
    pub density: f64,
    pub by: MaskBy,
    pub structure: MaskStructure,
    /// Batches of the training data FishMask's scores are summed over.
    pub calib: usize,
    /// Steps of the dense phase before LT-SFT's or diff pruning's choice.
    #[serde(default)]
    pub warmup_steps: usize,
    /// SHiRA's budget: `r·(in + out)` entries per layer instead of `density`.
    #[serde(default)]
    pub r: Option<usize>,
}

/// A site's selection, as its index tensor's [`Init`] carries it: which
/// weight, how many units, chosen how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskSelect {
    /// The base weight `[out, in]` (`{module}.weight`).
    pub weight: String,
    pub by: MaskBy,
    pub structure: MaskStructure,
    /// Units selected (entries, rows or columns).
    pub count: usize,
    pub out_f: usize,
    pub in_f: usize,
}

impl MaskSelect {
    /// How many units the structure has to choose from.
    pub fn units(&self) -> usize {
        match self.structure {
            MaskStructure::Element => self.out_f * self.in_f,
            MaskStructure::Row => self.out_f,
            MaskStructure::Column => self.in_f,
        }
    }
}

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Mask,
    name: "mask",
    placements: ON,
    target: TargetKind::Linear,
    args: &[
        ArgSpec {
            name: "density",
            ty: ArgType::Float {
                lo: 0.0,
                hi: 1.0,
                lo_open: true,
                hi_open: false,
            },
            default: Some(Default::Float(0.01)),
            doc: "fraction of the weight's entries (or rows, or columns) that train",
        },
        ArgSpec {
            name: "by",
            ty: ArgType::Choice(&["random", "magnitude", "fisher", "lt_sft", "diff_pruning"]),
            default: Some(Default::Name("magnitude")),
            doc: "how they are chosen: at random, largest |w|, largest squared gradient (FishMask), most moved in a dense warm-up (LT-SFT), or a learned L0 gate (diff pruning)",
        },
        ArgSpec {
            name: "structure",
            ty: ArgType::Choice(&["element", "row", "column"]),
            default: Some(Default::Name("element")),
            doc: "single entries, whole output rows, or whole input columns",
        },
        ArgSpec {
            name: "calib",
            ty: SIZE,
            default: Some(Default::Int(16)),
            doc: "batches of training data the fisher scores are summed over",
        },
        ArgSpec {
            name: "r",
            ty: ArgType::Int {
                min: 0,
                max: 1 << 20,
                zero_absent: false,
            },
            default: Some(Default::Int(0)),
            doc: "instead of density: r·(in + out) entries per layer, a LoRA's budget (HF's SHiRA); 0: use density",
        },
        ArgSpec {
            name: "warmup_steps",
            ty: SIZE,
            default: Some(Default::Int(100)),
            doc: "steps of the dense phase before lt_sft / diff_pruning choose (not counted in the run's steps)",
        },
    ],
    gateable: false,
    doc: "train a sparse subset of a frozen weight's entries (diff pruning, FishMask, FAR)",
    placement_note: "`mask` reparameterizes the module's own weight",
    exclusive: "sparse mask",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| configure(args),
    check,
    check_targets,
};

/// `r` replaces `density` and counts single entries.
fn check(args: &Args, call: Span) -> Vec<Diagnostic> {
    let r = args.fixed("r").and_then(|v| v.as_i64()).unwrap_or(0);
    if r == 0 {
        return Vec::new();
    }
    let at = args.span("r").unwrap_or(call);
    if args.span("density").is_some() {
        return vec![
            Diagnostic::error("`r` and `density` both size the mask")
                .at(at, "give one")
                .with_help("`r = K` keeps K·(in + out) entries per layer; `density` a fraction"),
        ];
    }
    match args.fixed("structure").and_then(|v| v.as_str()) {
        Some("row") | Some("column") => vec![
            Diagnostic::error("`r` sizes a mask of single entries")
                .at(at, "with structure=row / column")
                .with_help("size row and column masks with `density`"),
        ],
        _ => Vec::new(),
    }
}

fn configure(args: &Args) -> Option<MethodConfig> {
    Some(MethodConfig::Mask(MaskConfig {
        r: args
            .fixed("r")
            .and_then(|v| v.as_i64())
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&r| r > 0),
        density: float(args, "density"),
        by: match choice(args, "by") {
            "random" => MaskBy::Random,
            "fisher" => MaskBy::Fisher,
            "lt_sft" => MaskBy::LtSft,
            "diff_pruning" => MaskBy::DiffPruning,
            _ => MaskBy::Magnitude,
        },
        structure: structure_of(choice(args, "structure")),
        calib: args
            .fixed("calib")
            .and_then(|v| v.as_i64())
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(16)
            .max(1),
        warmup_steps: args
            .fixed("warmup_steps")
            .and_then(|v| v.as_i64())
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(100)
            .max(1),
    }))
}

fn structure_of(name: &str) -> MaskStructure {
    match name {
        "row" => MaskStructure::Row,
        "column" => MaskStructure::Column,
        _ => MaskStructure::Element,
    }
}

/// Units of `of` chosen at `density`: `round(density · of)`; single entries
/// at least one (rows and columns are refused at 0 by [`check_targets`]).
pub fn count(density: f64, of: usize, structure: MaskStructure) -> usize {
    let k = (density * of as f64).round() as usize;
    match structure {
        MaskStructure::Element => k.clamp(1, of.max(1)),
        MaskStructure::Row | MaskStructure::Column => k.min(of),
    }
}

/// Every density the statement may take (its value, or a search set's).
fn densities(args: &Args) -> Vec<f64> {
    match args.get("density") {
        Some(ArgValue::Fixed { value }) => value.as_f64().into_iter().collect(),
        Some(ArgValue::Set { values }) => values.iter().filter_map(|v| v.as_f64()).collect(),
        Some(ArgValue::Range { .. }) | None => Vec::new(),
    }
}

/// A row or column mask whose density selects no row (or column) of some
/// target is refused: it would train nothing there.
fn check_targets(args: &Args, targets: &[&Module], call: Span) -> Vec<Diagnostic> {
    let r = args.fixed("r").and_then(|v| v.as_i64()).unwrap_or(0) as usize;
    if r > 0 {
        for m in targets {
            if let ModuleKind::Linear {
                in_features,
                out_features,
                ..
            } = m.kind
                && r * (in_features + out_features) > in_features * out_features
            {
                return vec![
                    Diagnostic::error(format!(
                        "`r = {r}` asks for {} entries of `{}`, which has {}",
                        r * (in_features + out_features),
                        m.path,
                        in_features * out_features
                    ))
                    .at(args.span("r").unwrap_or(call), "more than the weight has"),
                ];
            }
        }
    }
    let Some(structure) = args
        .fixed("structure")
        .and_then(|v| v.as_str())
        .map(structure_of)
    else {
        return Vec::new();
    };
    let unit = match structure {
        MaskStructure::Element => return Vec::new(),
        MaskStructure::Row => "row",
        MaskStructure::Column => "column",
    };
    for d in densities(args) {
        for m in targets {
            let ModuleKind::Linear {
                in_features,
                out_features,
                ..
            } = m.kind
            else {
                continue;
            };
            let of = if structure == MaskStructure::Row {
                out_features
            } else {
                in_features
            };
            if count(d, of, structure) == 0 {
                return vec![
                    Diagnostic::error(format!(
                        "`density = {d}` selects no {unit} of `{}`: round({d} × {of}) = 0",
                        m.path
                    ))
                    .at(args.span("density").unwrap_or(call), "selects nothing")
                    .with_help(format!(
                        "use a density of at least 1/{of} (one {unit}), or `structure=element`"
                    )),
                ];
            }
        }
    }
    Vec::new()
}

impl MaskConfig {
    /// The selection at `site`.
    pub fn select(&self, site: &Site) -> MaskSelect {
        let (o, i) = (site.out_dim, site.in_dim);
        let of = match self.structure {
            MaskStructure::Element => o * i,
            MaskStructure::Row => o,
            MaskStructure::Column => i,
        };
        MaskSelect {
            weight: site_name(&site.module, "weight"),
            by: self.by,
            structure: self.structure,
            count: match self.r {
                Some(r) => (r * (o + i)).min(o * i),
                None => count(self.density, of, self.structure),
            },
            out_f: o,
            in_f: i,
        }
    }
}

/// The index tensor's name at `module`.
pub fn index_name(module: &str) -> String {
    site_name(module, "mask_index")
}

/// The value tensor's name at `module`.
pub fn values_name(module: &str) -> String {
    site_name(module, "mask_values")
}

impl SiteMethod for MaskConfig {
    fn name(&self) -> &'static str {
        "mask"
    }

    /// `mask_values` (zeros: the delta starts at nothing) — `[k]` entries,
    /// `[k, in]` rows or `[out, k]` columns — and the frozen `mask_index`:
    /// `[k, 2]` (row, column) pairs, or `[k]` row / column numbers, sorted.
    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let sel = self.select(site);
        let k = sel.count;
        let (values, index) = match self.structure {
            MaskStructure::Element => (vec![k], vec![k, 2]),
            MaskStructure::Row => (vec![k, sel.in_f], vec![k]),
            MaskStructure::Column => (vec![sel.out_f, k], vec![k]),
        };
        vec![
            TensorDecl::trainable(values_name(&site.module), values, Init::Zeros),
            TensorDecl {
                name: index_name(&site.module),
                shape: index,
                kind: TensorKind::Frozen { in_total: false },
                init: Init::MaskIndex(sel),
            },
        ]
    }

    /// Entries: a scatter of `k` products per row, nothing saved beyond the
    /// input the base product keeps. Rows: `x·Vᵀ` (`[n, k]`) scattered into
    /// the output. Columns: the `k` input columns gathered (saved) and
    /// multiplied by `V` (`[out, k]`).
    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        let sel = self.select(site);
        let (k, i, o) = (sel.count as u64, site.in_dim as u64, site.out_dim as u64);
        let selection_bytes = self.by.dense_copies() * i * o * 4;
        let cost = match self.structure {
            MaskStructure::Element => DeltaCost {
                row_flops: 2 * k,
                selection_bytes,
                ..DeltaCost::default()
            },
            MaskStructure::Row => DeltaCost {
                row_flops: 2 * k * i,
                selection_bytes,
                ..DeltaCost::default()
            },
            MaskStructure::Column => DeltaCost {
                row_flops: 2 * k * o,
                row_saved: k,
                selection_bytes,
                ..DeltaCost::default()
            },
        };
        Some(Lowering {
            op: Op::Delta {
                method: "mask",
                in_f: site.in_dim,
                out_f: site.out_dim,
                cost,
            },
            wiring: Wiring::DeltaSum,
        })
    }

    /// HF PEFT holds a mask as SHiRA: random single entries, `r` per layer.
    fn capabilities(&self, _: &Site) -> Capabilities {
        Capabilities {
            merge: true,
            hf: self.r.is_some()
                && self.by == MaskBy::Random
                && self.structure == MaskStructure::Element,
            routable: false,
        }
    }
}
