//! Everything a command needs from a compiled plan: base weights, the
//! tokenizer, and initial trainable parameters.

use crate::error::Result;
use crate::model::{BaseLookup, ParamStore, param_specs};
use crate::tokenizer::TextTokenizer;
use crate::weights::{GgufForm, Weights};
use peftc_compiler::model::Family;
use peftc_compiler::plan::Plan;

pub struct Session {
    pub plan: Plan,
    pub weights: Weights,
    pub tokenizer: TextTokenizer,
}

impl Session {
    pub fn open(plan: Plan) -> Result<Session> {
        let mut weights = Weights::load(&plan.model, GgufForm::of(&plan))?;
        crate::weights::loftq::prepare(&plan, &mut weights)?;
        let tokenizer = TextTokenizer::for_model(&plan.model)?;
        Ok(Session {
            plan,
            weights,
            tokenizer,
        })
    }

    /// Initial values of every trainable parameter, seeded.
    pub fn init_params(&self, seed: u64) -> Result<ParamStore> {
        let specs = param_specs(&self.plan);
        let embedding_name = match self.plan.model.family {
            Family::Bert => "embeddings.word_embeddings.weight",
            Family::Llama => "model.embed_tokens.weight",
        };
        let mut prompt_ids = Vec::new();
        for s in &self.plan.sites {
            if let Some(text) = s.method.site().init_text() {
                prompt_ids = self.tokenizer.encode_plain(text)?;
            }
        }
        let base = BaseLookup {
            weights: &self.weights,
            embedding_name,
        };
        ParamStore::init(&specs, seed, &base, &prompt_ids)
    }
}
