//! The model's own chat template (Jinja, as shipped with the model), used to
//! lay out chat requests when the model has one.
//!
//! Documents go where the last user turn's text begins: the conversation is
//! rendered with a marker there and split at it, so that everything before
//! the marker is fresh text, the documents follow, and the user's text and
//! the generation prompt form the query.

use minijinja::{context, Environment, ErrorKind};
use serde::Serialize;

use crate::error::ApiError;

/// Where the documents go; never produced by a tokenizer or typed by a user
/// (requests containing it are refused).
const DOCUMENTS_MARKER: &str = "\u{E000}prophetkv-documents\u{E001}";

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
}

/// A rendered conversation split where the documents go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedChat {
    /// Everything before the last user turn's text (BOS text removed: the
    /// engine adds the BOS id itself).
    pub before_documents: String,
    /// The last user turn's text and the generation prompt.
    pub query: String,
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
            .any(|m| m.content.contains(DOCUMENTS_MARKER))
        {
            return Err(ApiError::bad_request(
                "messages contain a reserved character sequence",
                Some("messages"),
            ));
        }
        let mut marked = messages.to_vec();
        if let Some(last) = marked.last_mut() {
            last.content.insert_str(0, DOCUMENTS_MARKER);
        }
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
                ApiError::unprocessable(
                    format!("the model's chat template rejected the messages: {e}"),
                    Some("messages"),
                )
            })?;
        let Some((before, query)) = rendered.split_once(DOCUMENTS_MARKER) else {
            return Err(ApiError::unprocessable(
                "the model's chat template does not render the last user message",
                Some("messages"),
            ));
        };
        let before = before.strip_prefix(&self.bos_token).unwrap_or(before);
        Ok(RenderedChat {
            before_documents: before.to_string(),
            query: query.replace(DOCUMENTS_MARKER, ""),
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

    fn msg(role: &str, content: &str) -> TemplateMessage {
        TemplateMessage {
            role: role.into(),
            content: content.into(),
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
            r.before_documents,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\n"
        );
        assert_eq!(
            r.query,
            "What is the code?<end_of_turn>\n<start_of_turn>model\n"
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
            r.before_documents,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
        );
        assert_eq!(r.query, "Hi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn the_reserved_marker_in_a_message_is_refused() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        let text = format!("x{DOCUMENTS_MARKER}y");
        assert!(t.render(&[msg("user", &text)]).is_err());
    }

    #[test]
    fn a_template_that_does_not_parse_is_an_error() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
