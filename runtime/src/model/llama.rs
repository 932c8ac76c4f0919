//! LLaMA-family decoders (`LlamaForCausalLM` names): pre-norm layers with
//! RMSNorm, RoPE, grouped-query attention and a SwiGLU MLP. Hidden states are
//! `[rows*seq, h]`.

use super::attention::{Heads, Prefix, attention};
use super::build::Loader;
use super::ctx::{Ctx, site_id};
use super::device_params::Params;
use super::frozen::Frozen;
use super::kv_cache::KvCache;
use super::linear::{Attached, SiteLinear};
use super::norm::NormWeights;
use super::ops::silu_mul;
use super::rope;
use crate::error::Result;
use crate::kernels;
use crate::kernels::PeftKernels;
use crate::methods::coda::Coda;
use crate::methods::lst::{Ladder, SideAt};
use crate::methods::prefix::PrefixSource;
use burn::tensor::{Int, Tensor};
use peftc_compiler::model::Dims;

struct Layer<B: PeftKernels> {
    path: String,
    input_norm: NormWeights<B>,
    q: SiteLinear<B>,
    k: SiteLinear<B>,
    v: SiteLinear<B>,
    o: SiteLinear<B>,
    post_norm: NormWeights<B>,
    gate: SiteLinear<B>,
    up: SiteLinear<B>,
    down: SiteLinear<B>,
    at_attention: Attached<B>,
    at_mlp: Attached<B>,
    at_layer: Attached<B>,
    /// CoDA beside the layer: it runs the layer on the tokens it routes.
    coda: Option<Coda>,
}

/// What a layer's attention sees besides this pass's keys.
enum Past<'a, 'c, B: PeftKernels> {
    /// Training, scoring: the pass is the whole sequence.
    None,
    /// Generation of one sequence: its tokens continue the cached ones.
    Sequence(&'a mut KvCache<B>),
    /// Decoding a batch: row `i` is one new token of the sequence `caches[i]` holds.
    Rows(&'a mut [&'c mut KvCache<B>]),
}

/// The positions of a layer's tokens: each sequence's from an offset, or
/// each token's own (the tokens CoDA gathered out of their sequences).
enum Positions<'a> {
    From(usize),
    At(&'a [usize]),
}

impl<B: PeftKernels> Layer<B> {
    /// The layer on `x: [rows*seq, h]` (`seq` including `n_prompt` leading
    /// soft-prompt positions), before the methods around the whole layer.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: Tensor<B, 2>,
        li: usize,
        seq: usize,
        n_prompt: usize,
        at: Positions,
        prefix: Option<&PrefixSource<B>>,
        past: Past<'_, '_, B>,
        heads: &Heads,
        d: &Dims,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        let eps = d.norm_eps;
        let input = x.clone();
        let n1 = self.input_norm.rms(x, eps, p)?;
        let q = self.q.forward(n1.clone(), p, ctx)?;
        let k = self.k.forward(n1.clone(), p, ctx)?;
        let v = self.v.forward(n1.clone(), p, ctx)?;
        let (q, k) = match at {
            Positions::From(offset) => (
                rope::apply(q, seq, d.heads, d.head_dim, d.rope_theta, offset),
                rope::apply(k, seq, d.kv_heads, d.head_dim, d.rope_theta, offset),
            ),
            Positions::At(pos) => (
                kernels::rope_at(q, pos, d.heads, d.head_dim, d.rope_theta),
                kernels::rope_at(k, pos, d.kv_heads, d.head_dim, d.rope_theta),
            ),
        };
        let pre = match (&past, prefix) {
            // A batch being decoded has its prefix in every row's cache.
            (Past::Rows(_), _) | (_, None) => None,
            (_, Some(s)) => s.layer(li, &n1, p)?,
        };
        if !matches!(past, Past::None) && pre.as_ref().is_some_and(|x| x.gate.is_some()) {
            return Err(crate::error::RuntimeError::Invalid(
                "generation with a gated (UniPELT) prefix is not supported yet".into(),
            ));
        }
        let core = match past {
            Past::None | Past::Sequence(_) => {
                // The past (a prefix method's keys first) is the prefix of
                // this pass; this pass's keys join it.
                let pre = match past {
                    Past::Sequence(cache) => {
                        if cache.is_empty()
                            && let Some(x) = pre
                        {
                            cache.extend(li, x.k, x.v);
                        }
                        let past = cache.past(li).map(|(k, v)| Prefix { k, v, gate: None });
                        cache.extend(li, k.clone(), v.clone());
                        past
                    }
                    _ => pre,
                };
                attention(
                    q,
                    k,
                    v,
                    heads,
                    seq,
                    n_prompt,
                    pre,
                    true,
                    0.0,
                    site_id(&self.path),
                    ctx,
                )
            }
            Past::Rows(caches) => {
                let kvd = k.dims()[1];
                let mut pasts = Vec::with_capacity(caches.len());
                for (i, cache) in caches.iter_mut().enumerate() {
                    let row = |t: &Tensor<B, 2>| t.clone().slice([i..i + 1, 0..kvd]);
                    cache.extend(li, row(&k), row(&v));
                    pasts.push(cache.past(li).ok_or_else(|| {
                        crate::error::RuntimeError::Internal("a decoded row lost its cache".into())
                    })?);
                }
                super::decode::attention_rows(q, pasts, heads)
            }
        };
        let o = self.o.forward(core, p, ctx)?;
        let o =
            self.at_attention
                .around_block(&format!("{}.self_attn", self.path), &n1, o, p, ctx)?;
        let a1 = input + o;
        let n2 = self.post_norm.rms(a1.clone(), eps, p)?;
        let g = self.gate.forward(n2.clone(), p, ctx)?;
        let u = self.up.forward(n2.clone(), p, ctx)?;
        let dn = self.down.forward(silu_mul(g, u), p, ctx)?;
        let dn = self
            .at_mlp
            .around_block(&format!("{}.mlp", self.path), &n2, dn, p, ctx)?;
        Ok(a1 + dn)
    }
}

pub struct Llama<B: PeftKernels> {
    dims: Dims,
    embed: Frozen<B>,
    layers: Vec<Layer<B>>,
    norm: NormWeights<B>,
    /// `lm_head` `[in, out]` when not tied to the embedding.
    lm_head_t: Option<SiteLinear<B>>,
    /// LST's side network, fed the layers' outputs.
    ladder: Option<Ladder>,
}

/// LST's side network attends over whole sequences it keeps no cache of.
const NO_LADDER_CACHE: &str =
    "generation with LST is not supported yet (its side network keeps no key/value cache)";

impl<B: PeftKernels> Llama<B> {
    pub fn load(l: &mut Loader<B>, with_lm_head: bool) -> Result<Llama<B>> {
        let d = l.plan.model.dims.clone();
        let h = d.hidden;
        let embed = l.frozen("model.embed_tokens.weight", &[d.vocab, h])?;
        let mut layers = Vec::with_capacity(d.layers);
        for i in 0..d.layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                input_norm: NormWeights::load(l, &format!("{p}.input_layernorm"), h, false)?,
                q: l.linear(&format!("{p}.self_attn.q_proj"))?,
                k: l.linear(&format!("{p}.self_attn.k_proj"))?,
                v: l.linear(&format!("{p}.self_attn.v_proj"))?,
                o: l.linear(&format!("{p}.self_attn.o_proj"))?,
                post_norm: NormWeights::load(
                    l,
                    &format!("{p}.post_attention_layernorm"),
                    h,
                    false,
                )?,
                gate: l.linear(&format!("{p}.mlp.gate_proj"))?,
                up: l.linear(&format!("{p}.mlp.up_proj"))?,
                down: l.linear(&format!("{p}.mlp.down_proj"))?,
                at_attention: l.attached(&format!("{p}.self_attn")),
                at_mlp: l.attached(&format!("{p}.mlp")),
                at_layer: l.attached(&p),
                coda: crate::methods::coda_at(l.plan, &p),
                path: p,
            });
        }
        let norm = NormWeights::load(l, "model.norm", h, false)?;
        let lm_head_t = match (with_lm_head, d.tied_embeddings) {
            (false, _) => None,
            (true, false) => Some(l.linear("lm_head")?),
            // Tied: the head is the embedding; methods placed on `head` still apply.
            (true, true) => {
                let attached = l.attached_linear("lm_head", &embed);
                let any = !attached.is_empty();
                any.then(|| SiteLinear::new("lm_head".into(), embed.clone(), None, attached))
            }
        };
        Ok(Llama {
            ladder: crate::methods::ladder(l.plan),
            dims: d,
            embed,
            layers,
            norm,
            lm_head_t,
        })
    }

    /// Final-normed hidden states `[rows*(prompt+seq), h]`. With a `cache`
    /// (one sequence), the tokens continue the cached ones and join the cache.
    pub fn forward(
        &self,
        ids: Tensor<B, 1, Int>,
        prompt: Option<Tensor<B, 2>>,
        prefix: &PrefixSource<B>,
        mut cache: Option<&mut KvCache<B>>,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        let d = &self.dims;
        let (rows, h) = (ctx.rows, d.hidden);
        let mut x = self.embed.rows(ids);
        let n_prompt = prompt.as_ref().map(|t| t.dims()[0]).unwrap_or(0);
        if let Some(pe) = prompt {
            let x3 = x.reshape([rows, ctx.seq, h]);
            let pe3 = pe.reshape([1, n_prompt, h]).expand([rows, n_prompt, h]);
            x = Tensor::cat(vec![pe3, x3], 1).reshape([rows * (n_prompt + ctx.seq), h]);
        }
        let seq = n_prompt + ctx.seq;
        // Real tokens' positions start after a prefix (HF shifts position ids
        // by it), and after what the cache holds.
        let past = cache.as_ref().map_or(0, |c| c.positions);
        let offset = prefix.positions() + past;
        let heads = Heads {
            heads: d.heads,
            kv_heads: d.kv_heads,
            head_dim: d.head_dim,
        };
        let eps = d.norm_eps;
        if self.ladder.is_some() && cache.is_some() {
            return Err(crate::error::RuntimeError::Invalid(NO_LADDER_CACHE.into()));
        }
        let side_at = SideAt {
            seq,
            n_prompt,
            offset,
        };
        let mut side = None;
        for (li, layer) in self.layers.iter().enumerate() {
            let input = x.clone();
            let out = match &layer.coda {
                Some(_) if cache.is_some() => {
                    return Err(crate::error::RuntimeError::Invalid(
                        "generation with CoDA is not supported yet (its router scores whole sequences)"
                            .into(),
                    ));
                }
                // The routed tokens keep their positions (RoPE, causality);
                // no prompt or prefix beside CoDA (the checker refuses them).
                Some(c) => c.forward(x, p, ctx, |xs, sub, at| {
                    let at = Positions::At(at);
                    layer.forward(xs, li, sub.seq, 0, at, None, Past::None, &heads, d, p, sub)
                })?,
                None => {
                    let at = Positions::From(offset);
                    let kv = match cache.as_deref_mut() {
                        Some(c) => Past::Sequence(c),
                        None => Past::None,
                    };
                    layer.forward(
                        x,
                        li,
                        seq,
                        n_prompt,
                        at,
                        Some(prefix),
                        kv,
                        &heads,
                        d,
                        p,
                        ctx,
                    )?
                }
            };
            x = layer
                .at_layer
                .around_block(&layer.path, &input, out, p, ctx)?;
            if let Some(l) = self.ladder.as_ref().filter(|l| l.reads(li)) {
                let s = match side.take() {
                    Some(s) => s,
                    None => l.start(input, p)?,
                };
                side = Some(l.step(li, x.clone(), s, &side_at, p, ctx)?);
            }
        }
        if let Some(c) = cache {
            c.positions += seq;
        }
        if let (Some(l), Some(s)) = (&self.ladder, side) {
            x = l.finish(x, s, p)?;
        }
        self.norm.rms(x, eps, p)
    }

    /// Final-normed hidden states `[n, h]` of one new token per sequence:
    /// `ids[i]` continues the sequence `caches[i]` holds, at its own position.
    pub fn decode(
        &self,
        ids: Tensor<B, 1, Int>,
        caches: &mut [&mut KvCache<B>],
        prefix: &PrefixSource<B>,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        let d = &self.dims;
        if self.ladder.is_some() {
            return Err(crate::error::RuntimeError::Invalid(NO_LADDER_CACHE.into()));
        }
        if self.layers.iter().any(|l| l.coda.is_some()) {
            return Err(crate::error::RuntimeError::Invalid(
                "generation with CoDA is not supported yet (its router scores whole sequences)"
                    .into(),
            ));
        }
        let positions: Vec<usize> = caches
            .iter()
            .map(|c| prefix.positions() + c.positions)
            .collect();
        let heads = Heads {
            heads: d.heads,
            kv_heads: d.kv_heads,
            head_dim: d.head_dim,
        };
        let mut x = self.embed.rows(ids);
        for (li, layer) in self.layers.iter().enumerate() {
            let input = x.clone();
            let at = Positions::At(&positions);
            let out = layer.forward(
                x,
                li,
                1,
                0,
                at,
                None,
                Past::Rows(&mut *caches),
                &heads,
                d,
                p,
                ctx,
            )?;
            x = layer
                .at_layer
                .around_block(&layer.path, &input, out, p, ctx)?;
        }
        for c in caches.iter_mut() {
            c.positions += 1;
        }
        self.norm.rms(x, d.norm_eps, p)
    }

    /// The head's weight `[vocab, h]` when the head is a plain frozen
    /// product (no method on it), which a loss may then apply chunk by chunk.
    pub fn frozen_head(&self) -> Option<&Frozen<B>> {
        match &self.lm_head_t {
            Some(head) => head.plain_weight(),
            None => Some(&self.embed),
        }
    }

    /// Vocabulary logits `[n, vocab]` for hidden states `[n, h]`.
    pub fn lm_logits(
        &self,
        hidden: Tensor<B, 2>,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        match &self.lm_head_t {
            Some(head) => head.forward(hidden, p, ctx),
            // Tied embeddings: `hidden @ embed.T` as a frozen linear (BLAS, no weight gradient).
            None => Ok(self.embed.linear(hidden, None)),
        }
    }
}
