//! The semantic checker: a parsed spec, checked against the real model, becomes
//! a [`Checked`] — the proof that every name resolves, every value is in range
//! and every method sits where it can go. Errors carry spans into the spec.

mod optimizer;
mod positions;
mod statement;
mod targets;

use crate::methods::{ArgValue, Args};
use crate::model::{ModelDesc, Module, NF4_BLOCK, Quantize, load_model};
use crate::search_spec::{SearchSpec, check_search};
use crate::task::{Task, TaskKind, head_modules};
use crate::train::TRAIN_KEYS;
use peftc_grammar::ast::{Arg, SpecFile};
use peftc_grammar::suggest::did_you_mean;
use peftc_grammar::{Diagnostic, Span};
use std::path::{Path, PathBuf};

pub use statement::CheckedStatement;
pub use targets::{biases_under, weights_under};

/// Where the spec lives and what the command line overrides.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Folder that relative paths in the spec are resolved against.
    pub spec_dir: PathBuf,
    /// `--model PATH`: replaces the spec's `model`.
    pub model_override: Option<PathBuf>,
    /// Problems with the train block's data are warnings, not errors (for
    /// `peftc compile`, which estimates without reading the data).
    pub lenient_data: bool,
}

/// A checked `peft` block.
#[derive(Debug, Clone)]
pub struct CheckedBlock {
    pub name: String,
    pub span: Span,
    pub statements: Vec<CheckedStatement>,
}

impl CheckedBlock {
    /// Whether any argument is a search set or range.
    pub fn is_space(&self) -> bool {
        self.statements.iter().any(|s| s.args.is_space())
    }
}

/// The `train` block's keys, checked (they may hold search values).
#[derive(Debug, Clone)]
pub struct CheckedTrain {
    pub args: Args,
    pub span: Span,
}

/// A spec that passed every check. Only [`check`] makes one (the private
/// field is the proof, in the manner of naga's validated module).
#[derive(Debug, Clone)]
#[allow(clippy::manual_non_exhaustive)]
pub struct Checked {
    pub model: ModelDesc,
    pub task: Task,
    /// The base model's modules and the task head's.
    pub modules: Vec<Module>,
    pub blocks: Vec<CheckedBlock>,
    pub train: Option<CheckedTrain>,
    pub searches: Vec<(SearchSpec, String)>,
    pub warnings: Vec<Diagnostic>,
    pub spec_dir: PathBuf,
    /// The label names when they could be read from the data.
    pub label_names: Option<Vec<String>>,
    _proof: (),
}

impl Checked {
    pub fn block(&self, name: &str) -> Option<&CheckedBlock> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// The block to compile or train when the user named none: the train
    /// block's `adapter`, else the only block.
    pub fn default_block(&self) -> Result<&CheckedBlock, Diagnostic> {
        if let Some(name) = self
            .train
            .as_ref()
            .and_then(|t| t.args.fixed("adapter"))
            .and_then(|v| v.as_str())
        {
            return self
                .block(name)
                .ok_or_else(|| Diagnostic::error(format!("no peft block `{name}`")));
        }
        match self.blocks.as_slice() {
            [one] => Ok(one),
            [] => Err(Diagnostic::error("the spec has no `peft` block")),
            many => Err(
                Diagnostic::error("the spec has several `peft` blocks; name one").with_note(
                    format!(
                        "blocks: {} (use --block NAME, or `adapter = NAME` in `train`)",
                        many.iter()
                            .map(|b| b.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            ),
        }
    }
}

/// Checks `file` against its model. Returns every error found, in source order.
pub fn check(file: &SpecFile, opts: &CheckOptions) -> Result<Checked, Vec<Diagnostic>> {
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut warnings: Vec<Diagnostic> = Vec::new();

    let model = load_spec_model(file, opts, &mut errors);
    let train = check_train(file, &mut errors);
    let fixed_str =
        |args: &Args, k: &str| args.fixed(k).and_then(|v| v.as_str()).map(str::to_string);

    // The task decides the head, and with it what `head` selects.
    let mut task = Task {
        kind: TaskKind::Feature,
        num_labels: None,
    };
    let mut label_names = None;
    if let Some(m) = &model {
        task.kind = TaskKind::default_for(m.family);
        if let Some(t) = &train
            && let Some(k) = fixed_str(&t.args, "task").and_then(|n| TaskKind::from_name(&n))
        {
            match k.supported_by(m.family) {
                Ok(()) => task.kind = k,
                Err(why) => errors.push(
                    Diagnostic::error(format!(
                        "task `{}` is not possible with a {} model",
                        k.name(),
                        m.model_type
                    ))
                    .at(t.args.span("task").unwrap_or(t.span), "unsupported task")
                    .with_note(why),
                ),
            }
        }
        if task.kind == TaskKind::Classify {
            task.num_labels = resolve_labels(
                train.as_ref(),
                opts,
                &mut warnings,
                &mut errors,
                &mut label_names,
            );
        } else {
            check_corpus(train.as_ref(), opts, &mut warnings, &mut errors);
        }
    }
    let modules: Vec<Module> = match &model {
        Some(m) => {
            let mut v = m.modules.clone();
            v.extend(head_modules(m, &task));
            v
        }
        None => Vec::new(),
    };

    // peft blocks
    let mut blocks: Vec<CheckedBlock> = Vec::new();
    let mut seen: Vec<(&str, Span)> = Vec::new();
    for b in file.peft_blocks() {
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == b.name.node) {
            errors.push(
                Diagnostic::error(format!("peft block `{}` is defined twice", b.name.node))
                    .at(b.name.span, "defined again here")
                    .with_secondary(*first, "first defined here"),
            );
            continue;
        }
        seen.push((&b.name.node, b.name.span));
        let mut statements = Vec::new();
        let mut block_errors = Vec::new();
        for st in &b.statements {
            match statement::check_statement(st, model.as_ref(), &modules) {
                Ok(s) => statements.push(s),
                Err(mut es) => block_errors.append(&mut es),
            }
        }
        if block_errors.is_empty() {
            block_errors.extend(statement::check_conflicts(&statements, &modules));
        }
        if b.statements.is_empty() {
            warnings.push(
                Diagnostic::warning(format!("peft block `{}` is empty", b.name.node))
                    .at(b.name.span, "trains nothing"),
            );
        }
        errors.append(&mut block_errors);
        blocks.push(CheckedBlock {
            name: b.name.node.clone(),
            span: b.span,
            statements,
        });
    }

    let block_names: Vec<&str> = seen.iter().map(|(n, _)| *n).collect();
    let reference = |name: &str, span: Span, what: &str, errors: &mut Vec<Diagnostic>| {
        if !block_names.contains(&name) {
            let mut d = Diagnostic::error(format!(
                "{what} names peft block `{name}`, which does not exist"
            ))
            .at(span, "no such block")
            .with_suggestion(did_you_mean(name, block_names.iter().copied()));
            if !block_names.is_empty() {
                d = d.with_note(format!("blocks: {}", block_names.join(", ")));
            }
            errors.push(d);
        }
    };
    if let Some(t) = &train
        && let Some(name) = fixed_str(&t.args, "adapter")
    {
        reference(
            &name,
            t.args.span("adapter").unwrap_or(t.span),
            "`train`",
            &mut errors,
        );
    }

    // search blocks
    let mut searches = Vec::new();
    // Blocks some search names, even one that fails its own checks.
    let mut explored: Vec<String> = file
        .search_blocks()
        .flat_map(|s| s.items.iter())
        .filter_map(|i| match i {
            peftc_grammar::ast::SearchItem::Entry(e) if e.key.node == "space" => {
                match &e.value.node {
                    peftc_grammar::ast::ValueKind::Ident(n) => Some(n.clone()),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    for s in file.search_blocks() {
        match check_search(s) {
            Ok(spec) => {
                let space = match spec.key_str("space") {
                    Some(n) => {
                        reference(
                            n,
                            spec.keys.span("space").unwrap_or(s.span),
                            "`search`",
                            &mut errors,
                        );
                        Some(n.to_string())
                    }
                    None => train
                        .as_ref()
                        .and_then(|t| fixed_str(&t.args, "adapter"))
                        .or_else(|| (block_names.len() == 1).then(|| block_names[0].to_string())),
                };
                match space {
                    Some(n) => {
                        explored.push(n.clone());
                        searches.push((spec, n));
                    }
                    None => errors.push(
                        Diagnostic::error(format!(
                            "search `{}` does not say which peft block to explore",
                            s.name.node
                        ))
                        .at(s.name.span, "no space")
                        .with_help("add `space = BLOCK`"),
                    ),
                }
            }
            Err(mut es) => errors.append(&mut es),
        }
    }
    // Search values only make sense in a block some search explores.
    for b in &blocks {
        if b.is_space() && !explored.contains(&b.name) {
            let span = first_space_span(b).unwrap_or(b.span);
            errors.push(
                Diagnostic::error(format!(
                    "peft block `{}` holds search values, but no `search` block explores it",
                    b.name
                ))
                .at(span, "a search set or range")
                .with_help(format!(
                    "add `search s {{ space = {} }}`, or write one value",
                    b.name
                )),
            );
        }
    }

    if let Some(m) = &model {
        positions::check(m, train.as_ref(), &blocks, &mut errors, &mut warnings);
    }
    optimizer::check(train.as_ref(), &blocks, &mut errors);

    errors.sort_by_key(|d| d.primary.as_ref().map(|l| l.span.start).unwrap_or(0));
    match (errors.is_empty(), model) {
        (true, Some(model)) => Ok(Checked {
            model,
            task,
            modules,
            blocks,
            train,
            searches,
            warnings,
            spec_dir: opts.spec_dir.clone(),
            label_names,
            _proof: (),
        }),
        _ => Err(errors),
    }
}

fn first_space_span(b: &CheckedBlock) -> Option<Span> {
    b.statements.iter().find_map(|s| {
        s.args
            .values
            .iter()
            .zip(&s.args.spans)
            .find(|((_, v), _)| !matches!(v, ArgValue::Fixed { .. }))
            .and_then(|(_, sp)| *sp)
    })
}

fn load_spec_model(
    file: &SpecFile,
    opts: &CheckOptions,
    errors: &mut Vec<Diagnostic>,
) -> Option<ModelDesc> {
    let decls: Vec<_> = file
        .items
        .iter()
        .filter_map(|i| match i {
            peftc_grammar::ast::Item::Model(m) => Some(m),
            _ => None,
        })
        .collect();
    if let [first, second, ..] = decls.as_slice() {
        errors.push(
            Diagnostic::error("the spec names its model twice")
                .at(second.span, "second `model`")
                .with_secondary(first.span, "first `model`"),
        );
    }
    let (path, span) = match (&opts.model_override, decls.first()) {
        (Some(p), _) => (p.clone(), None),
        (None, Some(m)) => (
            resolve_path(&opts.spec_dir, &m.path.node),
            Some(m.path.span),
        ),
        (None, None) => {
            errors.push(Diagnostic::error("the spec has no `model`").with_help(
                "add a line such as `model \"models/all-MiniLM-L6-v2\"`, or pass --model PATH",
            ));
            return None;
        }
    };
    match load_model(&path) {
        Ok(m) => match decls.first().and_then(|d| d.quantize.as_ref()) {
            Some(q) => quantize_model(m, q, errors),
            None => Some(m),
        },
        Err(e) => {
            let mut d = Diagnostic::error(e.to_string()).with_suggestion(e.suggestion());
            if let Some(s) = span {
                d = d.at(s, "this model");
            }
            if matches!(e, crate::model::ModelError::NotFound(_)) {
                d = d.with_note("paths in a spec are relative to the spec's folder");
            }
            errors.push(d);
            None
        }
    }
}

/// `model "DIR" quantize NAME`: the model with its linear layers coded by
/// NAME at load, or the error that says why it cannot be.
fn quantize_model(
    m: ModelDesc,
    q: &peftc_grammar::ast::Ident,
    errors: &mut Vec<Diagnostic>,
) -> Option<ModelDesc> {
    let names = Quantize::ALL.map(Quantize::name);
    let Some(kind) = Quantize::parse(&q.node) else {
        errors.push(
            Diagnostic::error(format!("unknown quantization `{}`", q.node))
                .at(q.span, "not a quantization peftc knows")
                .with_suggestion(did_you_mean(&q.node, names))
                .with_note(format!("peftc quantizes a base as {}", names.join(" or "))),
        );
        return None;
    };
    if m.weights.packed_params > 0 {
        errors.push(
            Diagnostic::error(format!(
                "the model is already quantized ({}); `quantize` codes a full-precision checkpoint",
                m.weights.dtype
            ))
            .at(q.span, "on a quantized GGUF")
            .with_help("drop `quantize`: the GGUF's blocks stay packed as they are"),
        );
        return None;
    }
    match m.quantized(kind) {
        Ok(m) => Some(m),
        Err(e) => {
            errors.push(
                Diagnostic::error(format!("cannot quantize the model as {}: {e}", kind.name()))
                    .at(q.span, "here")
                    .with_help(format!(
                        "NF4 codes rows in blocks of {NF4_BLOCK} values; `quantize int8` has no such constraint"
                    )),
            );
            None
        }
    }
}

/// A spec path: absolute as written, else relative to the spec's folder.
pub fn resolve_path(spec_dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        spec_dir.join(p)
    }
}

fn check_train(file: &SpecFile, errors: &mut Vec<Diagnostic>) -> Option<CheckedTrain> {
    let mut blocks = file.train_blocks();
    let first = blocks.next()?;
    for extra in blocks {
        errors.push(
            Diagnostic::error("the spec has two `train` blocks")
                .at(extra.keyword_span, "second `train`")
                .with_secondary(first.keyword_span, "first `train`"),
        );
    }
    let entries: Vec<Arg> = first
        .entries
        .iter()
        .map(|e| Arg {
            key: e.key.clone(),
            value: e.value.clone(),
            span: e.span,
        })
        .collect();
    match crate::methods::check_keyed("train", "key", TRAIN_KEYS, &entries, first.keyword_span) {
        Ok(args) => Some(CheckedTrain {
            args,
            span: first.keyword_span,
        }),
        Err(mut es) => {
            errors.append(&mut es);
            None
        }
    }
}

/// Reads the train block's data (existence, format, classes; no
/// tokenizing) and returns the class count for a classifier head. Problems
/// are errors, or warnings under `opts.lenient_data` (`peftc compile`
/// estimates without the data).
fn resolve_labels(
    train: Option<&CheckedTrain>,
    opts: &CheckOptions,
    warnings: &mut Vec<Diagnostic>,
    errors: &mut Vec<Diagnostic>,
    names: &mut Option<Vec<String>>,
) -> Option<usize> {
    let t = train?;
    let given = t.args.fixed("labels").and_then(|v| v.as_i64());
    let Some(path) = data_path(t, opts) else {
        return Some(given.map_or(2, |n| n as usize));
    };
    let span = t.args.span("data").unwrap_or(t.span);
    match crate::data::read_labelled(&path) {
        Ok(read) => {
            data_warnings(&read.warnings, span, warnings);
            let found = read.labels();
            let n = found.len();
            if let Some(given) = given
                && given as usize != n
            {
                errors.push(
                    Diagnostic::error(format!(
                        "`labels = {given}`, but the data has {n} classes ({})",
                        found.join(", ")
                    ))
                    .at(
                        t.args.span("labels").unwrap_or(t.span),
                        "does not match the data",
                    )
                    .with_help(format!("write `labels = {n}`, or leave it out")),
                );
            }
            *names = Some(found);
            Some(n)
        }
        Err(e) => {
            data_problem(e, span, opts, given.is_some(), errors, warnings);
            Some(given.map_or(2, |n| n as usize))
        }
    }
}

/// The data a causal LM or feature task trains on must hold text.
fn check_corpus(
    train: Option<&CheckedTrain>,
    opts: &CheckOptions,
    warnings: &mut Vec<Diagnostic>,
    errors: &mut Vec<Diagnostic>,
) {
    let Some(t) = train else { return };
    let Some(path) = data_path(t, opts) else {
        return;
    };
    let span = t.args.span("data").unwrap_or(t.span);
    match crate::data::read_documents(&path) {
        Ok(read) => data_warnings(&read.warnings, span, warnings),
        Err(e) => data_problem(e, span, opts, true, errors, warnings),
    }
}

fn data_path(t: &CheckedTrain, opts: &CheckOptions) -> Option<PathBuf> {
    t.args
        .fixed("data")
        .and_then(|v| v.as_str())
        .map(|d| resolve_path(&opts.spec_dir, d))
}

fn data_warnings(found: &[String], span: Span, warnings: &mut Vec<Diagnostic>) {
    for w in found.iter().take(3) {
        warnings.push(Diagnostic::warning(w.clone()).at(span, "read from here"));
    }
    if found.len() > 3 {
        warnings.push(
            Diagnostic::warning(format!(
                "{} more files hold bytes that are not UTF-8",
                found.len() - 3
            ))
            .at(span, ""),
        );
    }
}

fn data_problem(
    e: crate::data::DataError,
    span: Span,
    opts: &CheckOptions,
    labels_given: bool,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) {
    if opts.lenient_data {
        let mut d = Diagnostic::warning(format!("{e}; estimating without the data")).at(span, "");
        if !labels_given {
            d = d.with_help("set `labels = N` in `train` to size the classifier");
        }
        warnings.push(d);
    } else {
        errors.push(
            Diagnostic::error(e.to_string())
                .at(span, "the data `train` would read")
                .with_note("paths in a spec are relative to the spec's folder"),
        );
    }
}
