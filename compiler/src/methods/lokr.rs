//! LoKr (Edalati et al. 2022; HF PEFT's LyCORIS `LOKR`): the update is a
//! Kronecker product `ΔW = kron(w1, w2) · alpha/r`, each factor stored full
//! or as a low-rank product depending on its size (HF's rule, kept exactly:
//! which tensors a layer has depends on its shape).

use super::args::Args;
use super::loha::{RANK_ARGS, weight_delta};
use super::method::{Capabilities, Lowering, SiteMethod};
use super::spec::{
    ArgSpec, ArgType, Default, MethodSpec, ON, TargetKind, flag, float, no_check, no_target_check,
    size,
};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, site_name};
use crate::model::Dims;
use crate::plan::Site;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LokrConfig {
    pub r: usize,
    pub alpha: f64,
    /// Factor `w1` too when it is large against `r`.
    pub decompose_both: bool,
    /// The factorization's bound; -1: the divisor pair nearest the square root.
    pub decompose_factor: i64,
}

impl LokrConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// `((out_l, out_k), (in_m, in_n))`: the factors' shapes, `w1: [out_l,
    /// in_m]`, `w2: [out_k, in_n]`.
    pub fn shapes(&self, out: usize, inp: usize) -> ((usize, usize), (usize, usize)) {
        (
            factorization(out, self.decompose_factor),
            factorization(inp, self.decompose_factor),
        )
    }

    /// Whether `w1` and `w2` are stored whole (else as `_a`·`_b` factors).
    pub fn whole(&self, out: usize, inp: usize) -> (bool, bool) {
        let ((out_l, out_k), (in_m, in_n)) = self.shapes(out, inp);
        // HF: `use_w1 = not (decompose_both and r < max(...) / 2)`, float
        // division; the values are whole, so `r < m / 2` is `2r < m`.
        let w1 = !(self.decompose_both && 2 * self.r < out_l.max(in_m));
        let w2 = 2 * self.r >= out_k.max(in_n);
        (w1, w2)
    }
}

/// HF PEFT's `factorization(dimension, factor)`: `(m, n)` with `m·n =
/// dimension`. A positive `factor` dividing it gives `(factor, d/factor)`
/// as is; else the divisors are walked upward from 1 while `m < n` (and `m
/// <= factor`), ending with the smaller first.
pub fn factorization(dimension: usize, factor: i64) -> (usize, usize) {
    if factor > 0 && dimension.is_multiple_of(factor as usize) {
        return (factor as usize, dimension / factor as usize);
    }
    let factor = if factor == -1 {
        dimension
    } else {
        factor.max(0) as usize
    };
    let (mut m, mut n) = (1usize, dimension);
    let length = m + n;
    while m < n {
        let mut new_m = m + 1;
        while !dimension.is_multiple_of(new_m) {
            new_m += 1;
        }
        let new_n = dimension / new_m;
        if new_m + new_n > length || new_m > factor {
            break;
        }
        (m, n) = (new_m, new_n);
    }
    if m > n {
        (m, n) = (n, m);
    }
    (m, n)
}

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Lokr,
    name: "lokr",
    placements: ON,
    target: TargetKind::Linear,
    args: &[
        RANK_ARGS[0],
        RANK_ARGS[1],
        ArgSpec {
            name: "decompose_both",
            ty: ArgType::Bool,
            default: Some(Default::Bool(false)),
            doc: "also factor the first Kronecker factor into a low-rank product",
        },
        ArgSpec {
            name: "decompose_factor",
            ty: ArgType::Int {
                min: -1,
                max: 1 << 20,
                zero_absent: false,
            },
            default: Some(Default::Int(-1)),
            doc: "bound of the Kronecker factorization (-1: nearest the square root)",
        },
    ],
    gateable: false,
    doc: "Kronecker product of a small and a low-rank factor (LyCORIS LoKr, Edalati et al. 2022)",
    placement_note: "`lokr` reparameterizes the module itself",
    exclusive: "low-rank update (lokr)",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| configure(args),
    check: no_check,
    check_targets: no_target_check,
};

fn configure(args: &Args) -> Option<MethodConfig> {
    Some(MethodConfig::Lokr(LokrConfig {
        r: size(args, "r")?,
        alpha: float(args, "alpha"),
        decompose_both: flag(args, "decompose_both"),
        decompose_factor: args
            .fixed("decompose_factor")
            .and_then(|v| v.as_i64())
            .unwrap_or(-1),
    }))
}

impl SiteMethod for LokrConfig {
    fn name(&self) -> &'static str {
        "lokr"
    }

    /// HF's init (`init_weights=True`): `w1` zeros (factored: `w1_a` zeros,
    /// `w1_b` kaiming), `w2` kaiming (factored: both kaiming), kaiming being
    /// uniform in ±1/√fan_in.
    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let (o, i, r, m) = (site.out_dim, site.in_dim, self.r, &site.module);
        let ((out_l, out_k), (in_m, in_n)) = self.shapes(o, i);
        let (w1_whole, w2_whole) = self.whole(o, i);
        let k = |fan: usize| Init::Uniform(1.0 / (fan as f32).sqrt());
        let t = |suffix: &str, shape: Vec<usize>, init| {
            TensorDecl::trainable(site_name(m, suffix), shape, init)
        };
        let mut out = if w1_whole {
            vec![t("lokr_w1", vec![out_l, in_m], Init::Zeros)]
        } else {
            vec![
                t("lokr_w1_a", vec![out_l, r], Init::Zeros),
                t("lokr_w1_b", vec![r, in_m], k(in_m)),
            ]
        };
        if w2_whole {
            out.push(t("lokr_w2", vec![out_k, in_n], k(in_n)));
        } else {
            out.push(t("lokr_w2_a", vec![out_k, r], k(r)));
            out.push(t("lokr_w2_b", vec![r, in_n], k(in_n)));
        }
        out
    }

    fn lowering(&self, site: &Site, _: &Dims) -> Option<Lowering> {
        let (o, i, r) = (site.out_dim as u64, site.in_dim as u64, self.r as u64);
        Some(weight_delta("lokr", site, 2 * r * (o + i) + o * i))
    }

    fn capabilities(&self, _: &Site) -> Capabilities {
        Capabilities {
            merge: true,
            hf: true,
            routable: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HF PEFT 0.21.2's `factorization` on the dimensions of MiniLM,
    /// SmolLM2 and a few others (printed from the installed package).
    #[test]
    fn factorization_matches_hf_peft() {
        for (d, f, want) in [
            (384, -1, (16, 24)),
            (576, -1, (24, 24)),
            (1536, -1, (32, 48)),
            (192, -1, (12, 16)),
            (768, -1, (24, 32)),
            (3072, -1, (48, 64)),
            (4096, -1, (64, 64)),
            (127, -1, (1, 127)),
            (128, -1, (8, 16)),
            (128, 16, (16, 8)),
            (32, 8, (8, 4)),
            (384, 5, (4, 96)),
        ] {
            assert_eq!(factorization(d, f), want, "factorization({d}, {f})");
        }
    }

    #[test]
    fn which_factors_are_whole_follows_hf() {
        let c = LokrConfig {
            r: 8,
            alpha: 8.0,
            decompose_both: false,
            decompose_factor: -1,
        };
        // 384x384: w1 (16,16) whole; w2 (24,24): 8 < 12, factored.
        assert_eq!(c.whole(384, 384), (true, false));
        let r16 = LokrConfig { r: 16, ..c.clone() };
        assert_eq!(r16.whole(576, 576), (true, true));
        assert_eq!(r16.whole(1536, 576), (true, false));
        let both = LokrConfig {
            decompose_both: true,
            ..c
        };
        assert_eq!(both.whole(576, 576), (false, false));
    }
}
