//! What the train block's optimizer needs of the methods it trains. MeZO
//! (`optimizer = mezo`) estimates a projected gradient from two forward
//! passes and never computes a real one, so the methods that read gradients
//! themselves — AdaLoRA's rank allocator, a mask chosen by squared gradients
//! (FishMask) or by a dense warm-up (LT-SFT) — cannot run under it, and a
//! block with nothing trainable gives it nothing to perturb.

use crate::methods::{Args, MethodKind};
use peftc_grammar::Diagnostic;

use super::{CheckedBlock, CheckedTrain};

/// Why statement `kind` with `args` cannot train under MeZO, if it cannot.
fn needs_gradients(kind: MethodKind, args: &Args) -> Option<&'static str> {
    match kind {
        MethodKind::Adalora => Some(
            "AdaLoRA's rank allocator scores each rank by its gradient, which MeZO never computes",
        ),
        MethodKind::Mask => match args.fixed("by").and_then(|v| v.as_str()) {
            Some("fisher") => Some(
                "a FishMask chooses its entries by squared gradients, which MeZO never computes",
            ),
            Some("lt_sft") => Some(
                "an LT-SFT mask chooses its entries after a dense warm-up trained by backpropagation",
            ),
            _ => None,
        },
        MethodKind::Lora
        | MethodKind::Dora
        | MethodKind::Dylora
        | MethodKind::Ia3
        | MethodKind::Loha
        | MethodKind::Lokr
        | MethodKind::Vera
        | MethodKind::Adapter
        | MethodKind::Prompt
        | MethodKind::Prefix
        | MethodKind::Ptuning
        | MethodKind::Ln
        | MethodKind::Bitfit
        | MethodKind::Ssf
        | MethodKind::Full
        | MethodKind::Coda
        | MethodKind::Lst => None,
    }
}

pub(super) fn check(
    train: Option<&CheckedTrain>,
    blocks: &[CheckedBlock],
    errors: &mut Vec<Diagnostic>,
) {
    let Some(t) = train else { return };
    if t.args.fixed("optimizer").and_then(|v| v.as_str()) != Some("mezo") {
        return;
    }
    let at = t.args.span("optimizer").unwrap_or(t.span);
    // The block `adapter = NAME` trains, or every block (a search's spaces).
    let trained = t.args.fixed("adapter").and_then(|v| v.as_str());
    for b in blocks
        .iter()
        .filter(|b| trained.is_none_or(|n| n == b.name))
    {
        if b.statements.is_empty() {
            errors.push(
                Diagnostic::error(format!(
                    "`optimizer = mezo` has nothing to perturb: peft block `{}` is empty",
                    b.name
                ))
                .at(b.span, "no trainable parameters")
                .with_secondary(at, "MeZO perturbs the block's parameters"),
            );
        }
        for st in &b.statements {
            if let Some(why) = needs_gradients(st.kind, &st.args) {
                errors.push(
                    Diagnostic::error(format!("this method cannot train under MeZO: {why}"))
                        .at(st.span, "needs real gradients")
                        .with_secondary(at, "forward passes only")
                        .with_help("use `optimizer = adamw`, or another method"),
                );
            }
        }
    }
}
