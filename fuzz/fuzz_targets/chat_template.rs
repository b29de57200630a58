//! The chat-template renderer on arbitrary conversations through both real
//! models' templates: it renders or refuses with an error, never panics, and
//! a rendering keeps the last message's text whole in the query.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prophetkv_engine::TextPiece;
use prophetkv_fuzz::{gemma, smollm2};
use prophetkv_server::chat_template::TemplateMessage;

#[derive(Debug, Arbitrary)]
struct Message {
    role: Role,
    content: String,
    name: Option<String>,
}

#[derive(Debug, Arbitrary)]
enum Role {
    System,
    User,
    Assistant,
    Tool,
    Other(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    smollm2: bool,
    messages: Vec<Message>,
}

fuzz_target!(
    // The real tokenizers take seconds to build: before the timer starts.
    init: {
        gemma();
        smollm2();
    },
    |input: Input| {
        let model = if input.smollm2 { smollm2() } else { gemma() };
        let Some(template) = &model.template else {
            return;
        };
        let messages: Vec<TemplateMessage> = input
            .messages
            .into_iter()
            .map(|m| TemplateMessage {
                role: match m.role {
                    Role::System => "system".into(),
                    Role::User => "user".into(),
                    Role::Assistant => "assistant".into(),
                    Role::Tool => "tool".into(),
                    Role::Other(role) => role,
                },
                content: m.content,
                name: m.name,
            })
            .collect();
        let Ok(rendered) = template.render(&messages) else {
            return;
        };
        if let Some(last) = messages.last().filter(|m| m.role == "user") {
            let whole = rendered
                .query
                .0
                .iter()
                .any(|p| matches!(p, TextPiece::Plain(t) if *t == last.content));
            assert!(
                whole || last.content.is_empty(),
                "the last user message is not one piece of the query: {rendered:?}"
            );
        }
    }
);
