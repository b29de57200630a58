//! Both real models' tokenizers on arbitrary text: encoding never fails or
//! panics, every id is in the vocabulary, every offset lies within the text,
//! and decoding what was encoded gives the text back where the vocabulary
//! can represent it: every byte of it is some token's one byte (see
//! `RealModel::single_bytes`), and, for Gemma, no U+2581 (SentencePiece's
//! space: it comes back as a space).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prophetkv_fuzz::{gemma, smollm2};

fuzz_target!(
    // The real tokenizers take seconds to build: before the timer starts.
    init: {
        gemma();
        smollm2();
    },
    |data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        for (name, model) in [("Gemma", gemma()), ("SmolLM2", smollm2())] {
            let vocab_size = model.vocab_size;
            let tokenizer = &model.tokenizer;
            let ids = tokenizer.encode(&text).expect("any text encodes");
            assert!(ids.iter().all(|&id| (id as usize) < vocab_size));
            let (with_offsets, spans) = tokenizer
                .encode_with_offsets(&text)
                .expect("any text encodes with offsets");
            assert_eq!(with_offsets, ids, "the two encoders disagree");
            assert!(spans
                .iter()
                .all(|&(start, end)| start <= end && end <= text.len()));
            let decoded = tokenizer.decode(&ids).expect("encoded ids decode");
            if model.represents(&text) && !text.contains('\u{2581}') {
                assert_eq!(
                    decoded, text,
                    "{name}'s round trip changed the text: {ids:?}"
                );
            }
            let _ = tokenizer.encode_template(&text);
        }
    }
);
