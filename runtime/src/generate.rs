//! Text generation on a causal LM: the prompt prefilled once into a
//! [`KvCache`], then one token per step, greedy or sampled (temperature,
//! top-k, top-p, a seed), until `max_tokens`, an end-of-sequence token or a
//! stop string.

use crate::error::Result;
use crate::kernels::PeftKernels;
use crate::model::{KvCache, Params, PeftModel};
use crate::rng::Rng;
use crate::tokenizer::TextTokenizer;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0: greedy (argmax).
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probability reaches this (1: all).
    pub top_p: f64,
    /// Keep the k most probable tokens (0: all).
    pub top_k: usize,
    pub seed: u64,
    /// Generation ends before the first of these strings.
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> GenerateOptions {
        GenerateOptions {
            max_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_tokens` or the model's context.
    Length,
    /// An end-of-sequence token or a stop string.
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub prompt_tokens: usize,
    /// Generated token ids (an end-of-sequence token not included).
    pub tokens: Vec<u32>,
    /// Their text, cut before a stop string.
    pub text: String,
    pub finish: FinishReason,
    /// Wall time of the prompt's forward pass, and of the steps after it.
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

/// The next token from `logits` under `o` (greedy when `o.temperature` is 0).
pub fn pick(logits: &[f32], o: &GenerateOptions, rng: &mut Rng) -> u32 {
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |b, (i, &x)| {
                if x > b.1 { (i, x) } else { b }
            })
            .0 as u32
    };
    if o.temperature <= 0.0 {
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if o.top_k > 0 {
        order.truncate(o.top_k);
    }
    let top = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - top) / o.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if o.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                acc += p;
                acc >= o.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        order.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let u = rng.next_f64();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return order[i] as u32;
        }
    }
    order[order.len() - 1] as u32
}

/// The positions a prompt and its continuation may fill: the spec's
/// `seq_len`, or the model's context less any soft prompt.
pub fn context(plan: &peftc_compiler::plan::Plan) -> usize {
    let d = &plan.model.dims;
    match plan.text_positions() {
        usize::MAX if d.max_positions > 0 => d.max_positions.saturating_sub(plan.virtual_tokens()),
        n => n,
    }
}

/// The text of a growing list of generated tokens, released piece by piece:
/// nothing of a stop string, and no partial UTF-8 character.
pub struct TextStream {
    stop: Vec<String>,
    tokens: Vec<u32>,
    text: String,
    shown: usize,
}

impl TextStream {
    pub fn new(stop: Vec<String>) -> TextStream {
        TextStream {
            stop,
            tokens: Vec::new(),
            text: String::new(),
            shown: 0,
        }
    }

    /// Adds token `id`; returns the text it releases, and whether a stop
    /// string now ends the generation (the text is cut before it).
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> Result<(String, bool)> {
        self.tokens.push(id);
        self.text = tok.decode(&self.tokens)?;
        let text = &mut self.text;
        if let Some(cut) = self.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(cut);
            let piece = text.get(self.shown..).unwrap_or("").to_string();
            self.shown = text.len();
            return Ok((piece, true));
        }
        // Hold back what could still become a stop string, and a partial
        // UTF-8 character.
        let hold = self
            .stop
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .find(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let mut safe = text.len() - hold;
        while safe > self.shown && !text.is_char_boundary(safe) {
            safe -= 1;
        }
        if text[..safe].ends_with('\u{fffd}') {
            safe -= '\u{fffd}'.len_utf8();
        }
        if safe > self.shown {
            let piece = text[self.shown..safe].to_string();
            self.shown = safe;
            return Ok((piece, false));
        }
        Ok((String::new(), false))
    }

    /// The text held back so far (generation ended without a stop string).
    pub fn finish(&mut self) -> String {
        let piece = self.text.get(self.shown..).unwrap_or("").to_string();
        self.shown = self.text.len();
        piece
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Continues `prompt` (token ids). `on_text` receives each new piece of
/// text as it is decided (nothing of a stop string).
pub fn generate<B: PeftKernels>(
    model: &PeftModel<B>,
    p: &Params<B>,
    tok: &TextTokenizer,
    prompt: &[u32],
    o: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generated> {
    let context = context(&model.plan);
    if prompt.len() >= context {
        return Err(crate::error::RuntimeError::Invalid(format!(
            "the prompt has {} tokens; the model's context is {context}",
            prompt.len()
        )));
    }
    let mut cache: KvCache<B> = model.new_cache();
    let mut rng = sampling_rng(o.seed);
    let t0 = std::time::Instant::now();
    let mut logits = crate::kernels::on_pool(|| model.step(prompt, &mut cache, p))?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let mut stream = TextStream::new(o.stop.clone());
    let finish = loop {
        let n = stream.tokens().len();
        if n >= o.max_tokens || prompt.len() + n >= context {
            break FinishReason::Length;
        }
        let next = pick(&logits, o, &mut rng);
        if tok.eos_id == Some(next) {
            break FinishReason::Stop;
        }
        let (piece, stopped) = stream.push(tok, next)?;
        if !piece.is_empty() {
            on_text(&piece);
        }
        if stopped {
            break FinishReason::Stop;
        }
        logits = crate::kernels::on_pool(|| model.step(&[next], &mut cache, p))?;
    };
    let rest = stream.finish();
    if !rest.is_empty() {
        on_text(&rest);
    }
    Ok(Generated {
        prompt_tokens: prompt.len(),
        tokens: stream.tokens().to_vec(),
        text: stream.text().to_string(),
        finish,
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
    })
}

/// The generator a request's sampling draws from, a function of its seed.
pub fn sampling_rng(seed: u64) -> Rng {
    Rng::new(crate::rng::key(&[seed, 0x6765_6e65]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_the_argmax_and_sampling_keeps_to_top_k_and_top_p() {
        let logits = [0.1f32, 2.0, -1.0, 1.9, 0.0];
        let mut rng = Rng::new(1);
        assert_eq!(pick(&logits, &GenerateOptions::default(), &mut rng), 1);
        let top2 = GenerateOptions {
            temperature: 1.0,
            top_k: 2,
            ..GenerateOptions::default()
        };
        let mut seen = [0usize; 5];
        for _ in 0..2000 {
            seen[pick(&logits, &top2, &mut rng) as usize] += 1;
        }
        assert_eq!(seen[0] + seen[2] + seen[4], 0, "{seen:?}");
        // p(1) / p(3) = e^0.1 within sampling noise.
        let ratio = seen[1] as f64 / seen[3] as f64;
        assert!((ratio - 0.1f64.exp()).abs() < 0.15, "{ratio}");
        // top_p 0.5 keeps only the most probable token here (p = 0.40 < 0.5
        // takes the second too; 0.3 keeps one).
        let nucleus = GenerateOptions {
            temperature: 1.0,
            top_p: 0.3,
            ..GenerateOptions::default()
        };
        assert!((0..200).all(|_| pick(&logits, &nucleus, &mut rng) == 1));
    }
}
