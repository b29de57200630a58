//! The model's own chat template (Jinja, as shipped with the model), used to
//! lay out chat requests when the model has one.
//!
//! Documents go where the last user turn's text begins. Every message's
//! content is rendered as a marker and put back afterwards as client text:
//! the template's own text keeps its control tokens (`<start_of_turn>`,
//! `<|im_start|>`, ...), while a message that spells one stays plain text.

use minijinja::{context, Environment, ErrorKind};
use prophetkv_engine::{PromptText, TextPiece};
use serde::Serialize;

use crate::error::ApiError;

/// Private-use characters that delimit a message marker; requests whose
/// messages contain them are refused.
const MARK_OPEN: char = '\u{E000}';
const MARK_CLOSE: char = '\u{E001}';

fn marker(i: usize) -> String {
    format!("{MARK_OPEN}{i}{MARK_CLOSE}")
}

const TEMPLATE_NAME: &str = "chat";

/// A compiled chat template with the special-token strings it refers to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// One message as the template sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateMessage {
    /// system, user, assistant, ...
    pub role: String,
    /// The text.
    pub content: String,
    /// A participant's name, for templates that use it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A rendered conversation split where the documents go.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedChat {
    /// Everything before the last user turn's text (BOS text removed: the
    /// engine adds the BOS id itself).
    pub before_documents: PromptText,
    /// The last user turn's text and the generation prompt.
    pub query: PromptText,
}

/// `text` as template pieces with the messages put back at their markers.
fn pieces(text: &str, messages: &[TemplateMessage]) -> PromptText {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(MARK_OPEN) {
        let after = &rest[open + MARK_OPEN.len_utf8()..];
        let Some(close) = after.find(MARK_CLOSE) else {
            break;
        };
        let Some(message) = after[..close]
            .parse::<usize>()
            .ok()
            .and_then(|i| messages.get(i))
        else {
            break;
        };
        if open > 0 {
            out.push(TextPiece::Template(rest[..open].to_string()));
        }
        out.push(TextPiece::Plain(message.content.clone()));
        rest = &after[close + MARK_CLOSE.len_utf8()..];
    }
    if !rest.is_empty() {
        out.push(TextPiece::Template(rest.to_string()));
    }
    PromptText(out)
}

impl ChatTemplate {
    /// Compiles `source`; a template that does not parse is a start-up error.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<(), _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_string())?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Renders `messages` (the last one from the user) with the generation
    /// prompt, split where the last user turn's text begins.
    pub fn render(&self, messages: &[TemplateMessage]) -> Result<RenderedChat, ApiError> {
        if messages
            .iter()
            .any(|m| m.content.contains([MARK_OPEN, MARK_CLOSE]))
        {
            return Err(ApiError::bad_request(
                "messages contain a reserved character (U+E000 or U+E001)",
                Some("messages"),
            ));
        }
        let marked: Vec<TemplateMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| TemplateMessage {
                role: m.role.clone(),
                content: marker(i),
                name: m.name.clone(),
            })
            .collect();
        let rendered = self
            .env
            .get_template(TEMPLATE_NAME)
            .and_then(|t| {
                t.render(context! {
                    messages => minijinja::value::Serde(&marked),
                    add_generation_prompt => true,
                    bos_token => &self.bos_token,
                    eos_token => &self.eos_token,
                })
            })
            .map_err(|e| {
                ApiError::bad_request(
                    format!("the model's chat template rejected the messages: {e}"),
                    Some("messages"),
                )
            })?;
        let last = marker(messages.len().saturating_sub(1));
        let Some(split) = rendered.find(&last) else {
            return Err(ApiError::bad_request(
                "the model's chat template does not render the last user message",
                Some("messages"),
            ));
        };
        let (before, query) = rendered.split_at(split);
        let before = before.strip_prefix(&self.bos_token).unwrap_or(before);
        Ok(RenderedChat {
            before_documents: pieces(before, messages),
            query: pieces(query, messages),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gemma 3's instruction-tuned template, as published with the model.
    const GEMMA3: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
"#;

    /// A Qwen-style template, which calls Python string methods.
    const CHATML: &str = "{% for m in messages %}{% if m.role.startswith('sys') %}<|im_start|>system\n{{ m.content.strip() }}<|im_end|>\n{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    /// The text of `p`, client pieces in [brackets].
    fn show(p: &PromptText) -> String {
        p.0.iter()
            .map(|x| match x {
                TextPiece::Plain(t) => format!("[{t}]"),
                TextPiece::Template(t) => t.clone(),
                TextPiece::Ids(ids) => format!("{ids:?}"),
            })
            .collect()
    }

    fn msg(role: &str, content: &str) -> TemplateMessage {
        TemplateMessage {
            role: role.into(),
            content: content.into(),
            name: None,
        }
    }

    #[test]
    fn gemma_template_splits_before_the_last_user_text_and_drops_the_bos_text() {
        let t = ChatTemplate::new(GEMMA3, "<bos>", "<eos>").unwrap();
        let r = t
            .render(&[
                msg("system", "Be brief."),
                msg("user", "Hi"),
                msg("assistant", "Hello."),
                msg("user", "What is the code?"),
            ])
            .unwrap();
        assert_eq!(
            show(&r.before_documents),
            "<start_of_turn>user\n[Be brief.]\n\n[Hi]<end_of_turn>\n<start_of_turn>model\n[Hello.]<end_of_turn>\n<start_of_turn>user\n"
        );
        assert_eq!(
            show(&r.query),
            "[What is the code?]<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn template_errors_are_client_errors_naming_the_reason() {
        let t = ChatTemplate::new(GEMMA3, "<bos>", "<eos>").unwrap();
        let err = t
            .render(&[msg("user", "a"), msg("user", "b")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }

    #[test]
    fn python_string_methods_work_in_templates() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let r = t
            .render(&[msg("system", "  Be brief. "), msg("user", "Hi")])
            .unwrap();
        assert_eq!(
            show(&r.before_documents),
            "<|im_start|>system\n[  Be brief. ]<|im_end|>\n<|im_start|>user\n"
        );
        assert_eq!(show(&r.query), "[Hi]<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn the_reserved_marker_in_a_message_is_refused() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        let text = format!("x{}y", marker(0));
        assert!(t.render(&[msg("user", &text)]).is_err());
    }

    #[test]
    fn a_message_spelling_a_control_token_stays_client_text() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        let r = t.render(&[msg("user", "<|im_start|>system")]).unwrap();
        assert_eq!(r.query.0[0], TextPiece::Plain("<|im_start|>system".into()));
    }

    #[test]
    fn a_template_that_does_not_parse_is_an_error() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
