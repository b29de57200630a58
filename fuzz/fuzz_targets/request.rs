//! A request body on its way to the engine: the JSON of a chat or completions
//! request is parsed, mapped onto an engine request (the chat through a real
//! model's template or the plain layout) and validated against a real model's
//! limits. Every step refuses bad input with an error, never a panic; what
//! passes has a tokenizable query within the vocabulary.
//!
//! The first byte chooses the endpoint and the layout; the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prophetkv_engine::validate::Limits;
use prophetkv_engine::{ProphetOptions, StrategyKind, TextPiece};
use prophetkv_fuzz::{gemma, smollm2, RealModel};
use prophetkv_server::openai::{ChatRequest, CompletionRequest, Defaults};

fn defaults(model: Option<&RealModel>) -> Defaults {
    Defaults {
        model: "served".into(),
        strategy: StrategyKind::ProphetKv,
        ratio: 0.2,
        prophet: ProphetOptions::default(),
        chat_max_tokens: 256,
        chat_template: model.and_then(|m| m.template.clone()),
    }
}

fuzz_target!(
    // The real tokenizers take seconds to build: before the timer starts.
    init: {
        gemma();
        smollm2();
    },
    |data: &[u8]| {
        let Some((&choice, body)) = data.split_first() else {
            return;
        };
        let model = match choice % 3 {
            1 => smollm2(),
            _ => gemma(), // 2: with the plain layout
        };
        let vocab_size = model.vocab_size;
        let template = (choice % 3 != 2).then_some(model);
        let defaults = defaults(template);
        let mapped = if choice & 0x80 == 0 {
            let Ok(request) = serde_json::from_slice::<ChatRequest>(body) else {
                return;
            };
            request.map(&defaults, "tenant")
        } else {
            let Ok(request) = serde_json::from_slice::<CompletionRequest>(body) else {
                return;
            };
            request.map(&defaults, "tenant")
        };
        let Ok(mapped) = mapped else {
            return;
        };
        let limits = Limits {
            num_layers: 18,
            vocab_size,
            context: 32_768,
            anchor: 12,
            max_documents: prophetkv_engine::validate::DEFAULT_MAX_DOCUMENTS,
            document_tokens: 0,
            first_document_exact: true,
        };
        let query = mapped.request.query.clone();
        if limits.validate(mapped.request).is_ok() {
            for piece in query.0 {
                let ids = match piece {
                    TextPiece::Plain(text) => model.tokenizer.encode(&text),
                    TextPiece::Template(text) => model.tokenizer.encode_template(&text),
                    TextPiece::Ids(ids) => Ok(ids),
                }
                .expect("a validated query tokenizes");
                assert!(ids.iter().all(|&id| (id as usize) < vocab_size));
            }
        }
    }
);
