//! BERT (`BertModel` + `BertForSequenceClassification`'s pooler), post-norm,
//! written to mirror the checkpoint's keys. Hidden states are `[rows*seq, h]`.

use super::attention::{Heads, Prefix, attention};
use super::build::Loader;
use super::ctx::{Ctx, site_id};
use super::device_params::Params;
use super::linear::{Attached, SiteLinear};
use super::norm::NormWeights;
use super::ops::{gelu, layer_norm};
use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::methods::coda::Coda;
use crate::methods::lst::{Ladder, SideAt};
use crate::methods::prefix::PrefixSource;
use burn::tensor::{Int, Tensor, TensorData};
use peftc_compiler::model::Dims;

const HIDDEN_DROPOUT: f64 = 0.1;
const ATTN_DROPOUT: f64 = 0.1;

/// A LayerNorm: its parameters, and the post-norm residual's epsilon.
struct Norm<B: PeftKernels>(NormWeights<B>);

impl<B: PeftKernels> Norm<B> {
    fn load(l: &mut Loader<B>, path: &str, d: usize) -> Result<Norm<B>> {
        Ok(Norm(NormWeights::load(l, path, d, true)?))
    }

    fn forward(&self, x: Tensor<B, 2>, eps: f64, p: &Params<B>) -> Result<Tensor<B, 2>> {
        let gamma = self.0.weight(p)?;
        let beta = match self.0.bias(p)? {
            Some(b) => b,
            None => Tensor::zeros(gamma.dims(), &gamma.device()),
        };
        Ok(layer_norm(x, gamma, beta, eps))
    }
}

struct Layer<B: PeftKernels> {
    path: String,
    query: SiteLinear<B>,
    key: SiteLinear<B>,
    value: SiteLinear<B>,
    out: SiteLinear<B>,
    attn_norm: Norm<B>,
    up: SiteLinear<B>,
    down: SiteLinear<B>,
    mlp_norm: Norm<B>,
    at_attention: Attached<B>,
    at_mlp: Attached<B>,
    at_layer: Attached<B>,
    /// CoDA beside the layer: it runs the layer on the tokens it routes.
    coda: Option<Coda>,
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
        prefix: Option<&PrefixSource<B>>,
        heads: &Heads,
        d: &Dims,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        let input = x.clone();
        let q = self.query.forward(x.clone(), p, ctx)?;
        let k = self.key.forward(x.clone(), p, ctx)?;
        let v = self.value.forward(x.clone(), p, ctx)?;
        let pre: Option<Prefix<B>> = match prefix {
            Some(s) => s.layer(li, &x, p)?,
            None => None,
        };
        let core = attention(
            q,
            k,
            v,
            heads,
            seq,
            n_prompt,
            pre,
            false,
            ATTN_DROPOUT,
            site_id(&format!("{}.attention.dropout", self.path)),
            ctx,
        );
        let o = self.out.forward(core, p, ctx)?;
        let o = ctx.dropout(
            o,
            HIDDEN_DROPOUT,
            site_id(&format!("{}.attention.output.dropout", self.path)),
        );
        let o = self.at_attention.around_block(
            &format!("{}.attention", self.path),
            &input,
            o,
            p,
            ctx,
        )?;
        let a1 = self.attn_norm.forward(o + input, d.norm_eps, p)?;
        let u = gelu(self.up.forward(a1.clone(), p, ctx)?);
        let dn = self.down.forward(u, p, ctx)?;
        let dn = ctx.dropout(
            dn,
            HIDDEN_DROPOUT,
            site_id(&format!("{}.output.dropout", self.path)),
        );
        let dn = self
            .at_mlp
            .around_block(&format!("{}.mlp", self.path), &a1, dn, p, ctx)?;
        self.mlp_norm.forward(dn + a1, d.norm_eps, p)
    }
}

pub struct Bert<B: PeftKernels> {
    dims: Dims,
    word: Tensor<B, 2>,
    position: Tensor<B, 2>,
    token_type: Tensor<B, 2>,
    emb_norm: Norm<B>,
    layers: Vec<Layer<B>>,
    pooler: Option<SiteLinear<B>>,
    /// LST's side network, fed the layers' outputs.
    ladder: Option<Ladder>,
}

impl<B: PeftKernels> Bert<B> {
    pub fn load(l: &mut Loader<B>, with_pooler: bool) -> Result<Bert<B>> {
        let d = l.plan.model.dims.clone();
        let h = d.hidden;
        let word = l.tensor("embeddings.word_embeddings.weight", &[d.vocab, h])?;
        let position = l.tensor(
            "embeddings.position_embeddings.weight",
            &[d.max_positions, h],
        )?;
        let token_type = l.tensor(
            "embeddings.token_type_embeddings.weight",
            &[d.type_vocab, h],
        )?;
        let emb_norm = Norm::load(l, "embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(d.layers);
        for i in 0..d.layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                query: l.linear(&format!("{p}.attention.self.query"))?,
                key: l.linear(&format!("{p}.attention.self.key"))?,
                value: l.linear(&format!("{p}.attention.self.value"))?,
                out: l.linear(&format!("{p}.attention.output.dense"))?,
                attn_norm: Norm::load(l, &format!("{p}.attention.output.LayerNorm"), h)?,
                up: l.linear(&format!("{p}.intermediate.dense"))?,
                down: l.linear(&format!("{p}.output.dense"))?,
                mlp_norm: Norm::load(l, &format!("{p}.output.LayerNorm"), h)?,
                at_attention: l.attached(&format!("{p}.attention")),
                at_mlp: l.attached(&format!("{p}.mlp")),
                at_layer: l.attached(&p),
                coda: crate::methods::coda_at(l.plan, &p),
                path: p,
            });
        }
        let pooler = if with_pooler {
            Some(l.linear("pooler.dense")?)
        } else {
            None
        };
        Ok(Bert {
            ladder: crate::methods::ladder(l.plan),
            dims: d,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            pooler,
        })
    }

    /// Hidden states `[rows*(prompt+seq), h]` for `ids` (`[rows*seq]`).
    pub fn forward(
        &self,
        ids: Tensor<B, 1, Int>,
        prompt: Option<Tensor<B, 2>>,
        prefix: &PrefixSource<B>,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        let d = &self.dims;
        let (rows, h) = (ctx.rows, d.hidden);
        let mut x = self.word.clone().select(0, ids);
        let n_prompt = prompt.as_ref().map(|t| t.dims()[0]).unwrap_or(0);
        if let Some(pe) = prompt {
            let x3 = x.reshape([rows, ctx.seq, h]);
            let pe3 = pe.reshape([1, n_prompt, h]).expand([rows, n_prompt, h]);
            x = Tensor::cat(vec![pe3, x3], 1).reshape([rows * (n_prompt + ctx.seq), h]);
        }
        let seq = n_prompt + ctx.seq;
        // Positions start after a prefix (HF: past key values' length).
        let offset = prefix.positions();
        let pos: Vec<i64> = (0..rows)
            .flat_map(|_| (offset..offset + seq).map(|v| v as i64))
            .collect();
        let pos = Tensor::<B, 1, Int>::from_data(TensorData::new(pos, [rows * seq]), &ctx.device);
        x = x + self.position.clone().select(0, pos) + self.token_type.clone().slice([0..1, 0..h]);
        x = self.emb_norm.forward(x, d.norm_eps, p)?;
        x = ctx.dropout(x, HIDDEN_DROPOUT, site_id("embeddings.dropout"));
        let heads = Heads {
            heads: d.heads,
            kv_heads: d.kv_heads,
            head_dim: d.head_dim,
        };
        let at = SideAt {
            seq,
            n_prompt,
            offset: 0,
        };
        let mut side = None;
        for (li, layer) in self.layers.iter().enumerate() {
            let input = x.clone();
            let out = match &layer.coda {
                // The tokens CoDA routes run the layer alone (no prompt or
                // prefix: the checker refuses them beside CoDA).
                Some(c) => c.forward(x, p, ctx, |xs, sub, _| {
                    layer.forward(xs, li, sub.seq, 0, None, &heads, d, p, sub)
                })?,
                None => layer.forward(x, li, seq, n_prompt, Some(prefix), &heads, d, p, ctx)?,
            };
            x = layer
                .at_layer
                .around_block(&layer.path, &input, out, p, ctx)?;
            if let Some(l) = self.ladder.as_ref().filter(|l| l.reads(li)) {
                let s = match side.take() {
                    Some(s) => s,
                    None => l.start(input, p)?,
                };
                side = Some(l.step(li, x.clone(), s, &at, p, ctx)?);
            }
        }
        match (&self.ladder, side) {
            (Some(l), Some(s)) => l.finish(x, s, p),
            _ => Ok(x),
        }
    }

    /// `tanh(pooler(h[:, 0]))`, `[rows, h]`, for `hidden: [rows*seq, h]`.
    pub fn pool(
        &self,
        hidden: Tensor<B, 2>,
        seq: usize,
        p: &Params<B>,
        ctx: &Ctx<B>,
    ) -> Result<Tensor<B, 2>> {
        let rows = ctx.rows;
        let first: Vec<i64> = (0..rows).map(|r| (r * seq) as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(first, [rows]), &ctx.device);
        let cls = hidden.select(0, idx);
        match &self.pooler {
            Some(pooler) => Ok(pooler.forward(cls, p, ctx)?.tanh()),
            None => Ok(cls),
        }
    }
}
