//! Tool calling with the default tool prompt (Hermes-style, as vLLM offers
//! for models whose chat template has no tool format): the tools are
//! described in a system message, a call is
//! `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, earlier calls
//! and their results are rendered in the same format, and the answer is
//! constrained to that format with the tools' own parameter schemas
//! (`required`, a named function) or left free to choose (`auto`).

use prophetkv_engine::compact_json_schema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::request_id::unique_id;

/// Opens a call in the answer.
pub const CALL_OPEN: &str = "<tool_call>";
/// Closes a call.
pub const CALL_CLOSE: &str = "</tool_call>";

/// A function the model may call.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// `function`.
    #[serde(rename = "type")]
    #[schema(pattern = "^function$")]
    pub kind: String,
    /// The function.
    pub function: FunctionSpec,
}

/// A function's name, purpose and parameters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of its arguments (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Accepted either way: calls always follow the schema.
    #[serde(skip_serializing)]
    pub strict: Option<bool>,
}

/// `tool_choice`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(
    untagged,
    expecting = "\"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}"
)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(ToolMode),
    /// One named function.
    Named(NamedTool),
}

/// The modes of `tool_choice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolMode {
    /// Never call.
    None,
    /// Call or answer, as the model chooses.
    Auto,
    /// Call at least one.
    Required,
}

/// `{"type": "function", "function": {"name": ...}}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedTool {
    /// `function`.
    #[serde(rename = "type")]
    #[schema(pattern = "^function$")]
    pub kind: String,
    /// The function's name.
    pub function: NamedFunction,
}

/// A function's name.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedFunction {
    /// The name.
    pub name: String,
}

/// A call in an assistant message (history) or in a response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ToolCall {
    /// Its id (answered by a tool message's `tool_call_id`).
    pub id: String,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

/// A called function.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FunctionCall {
    /// Its name.
    pub name: String,
    /// Its arguments, as a JSON text.
    pub arguments: String,
}

/// What a request's tools mean for its layout and its answer.
#[derive(Debug, Clone)]
pub struct ToolUse {
    /// The system text describing the tools.
    pub prompt: String,
    /// The grammar the answer is held to (`None`: free text).
    pub grammar: Option<String>,
    /// Whether the answer is parsed for calls.
    pub parse_calls: bool,
}

/// The tools of a request, checked, and how to use them; `None` when the
/// request has none.
pub fn tool_use(
    tools: &[Tool],
    choice: Option<&ToolChoice>,
    parallel: bool,
) -> Result<Option<ToolUse>, ApiError> {
    if tools.is_empty() {
        return match choice {
            None | Some(ToolChoice::Mode(ToolMode::None)) => Ok(None),
            Some(_) => Err(ApiError::bad_request(
                "tool_choice needs tools",
                Some("tool_choice"),
            )),
        };
    }
    for (i, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(ApiError::bad_request(
                format!("tools[{i}].type must be \"function\", got {:?}", tool.kind),
                Some("tools"),
            ));
        }
        if tool.function.name.is_empty() {
            return Err(ApiError::bad_request(
                format!("tools[{i}].function.name must not be empty"),
                Some("tools"),
            ));
        }
        if let Some(p) = &tool.function.parameters {
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    format!("tools[{i}].function.parameters must be a JSON schema object"),
                    Some("tools"),
                ));
            }
        }
    }
    let prompt = tool_prompt(tools);
    let mode = match choice {
        None => ToolMode::Auto,
        Some(ToolChoice::Mode(mode)) => *mode,
        Some(ToolChoice::Named(named)) => {
            let Some(tool) = tools
                .iter()
                .find(|t| t.function.name == named.function.name)
            else {
                return Err(ApiError::bad_request(
                    format!(
                        "tool_choice names {:?}, which is not in tools",
                        named.function.name
                    ),
                    Some("tool_choice"),
                ));
            };
            return Ok(Some(ToolUse {
                prompt,
                grammar: Some(calls_grammar(std::slice::from_ref(tool), false, false)),
                parse_calls: true,
            }));
        }
    };
    Ok(Some(match mode {
        ToolMode::None => ToolUse {
            prompt,
            grammar: None,
            parse_calls: false,
        },
        ToolMode::Auto => ToolUse {
            prompt,
            grammar: Some(calls_grammar(tools, parallel, true)),
            parse_calls: true,
        },
        ToolMode::Required => ToolUse {
            prompt,
            grammar: Some(calls_grammar(tools, parallel, false)),
            parse_calls: true,
        },
    }))
}

/// The system text that describes `tools` and the call format.
fn tool_prompt(tools: &[Tool]) -> String {
    let mut out = String::from(
        "You can call functions. To call one, answer with only\n\
         <tool_call>{\"name\": \"<function name>\", \"arguments\": <arguments as a JSON object>}</tool_call>\n\
         and nothing else; a function's result comes back in <tool_response></tool_response>.\n\
         The functions:\n",
    );
    for tool in tools {
        let spec = serde_json::to_string(&tool.function).unwrap_or_default();
        out.push_str(&spec);
        out.push('\n');
    }
    out
}

/// The JSON schema of one call of `tool`.
fn call_schema(tool: &Tool) -> Value {
    let arguments = tool
        .function
        .parameters
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    json!({
        "type": "object",
        "properties": {
            "name": {"const": tool.function.name},
            "arguments": arguments,
        },
        "required": ["name", "arguments"],
        "additionalProperties": false,
    })
}

/// A Lark grammar: one call (or several, when `parallel`) of `tools`, or,
/// when `or_text`, text that does not start a call.
fn calls_grammar(tools: &[Tool], parallel: bool, or_text: bool) -> String {
    let schema =
        compact_json_schema(json!({"anyOf": tools.iter().map(call_schema).collect::<Vec<_>>()}));
    let calls = if parallel {
        "call (\"\\n\" call)*"
    } else {
        "call"
    };
    let start = if or_text {
        format!("start: TEXT | {calls}\nTEXT: /[^<](.|\\n)*/\n")
    } else {
        format!("start: {calls}\n")
    };
    format!("{start}call: \"{CALL_OPEN}\" body \"{CALL_CLOSE}\"\nbody: %json {schema}\n")
}

/// The calls an answer makes, if it is calls; `None` for a text answer (or
/// calls that do not parse, which are left as text).
pub fn parse_calls(text: &str) -> Option<Vec<ToolCall>> {
    let mut rest = text.trim();
    if !rest.starts_with(CALL_OPEN) {
        return None;
    }
    let mut calls = Vec::new();
    while let Some(after) = rest.strip_prefix(CALL_OPEN) {
        let end = after.find(CALL_CLOSE)?;
        let call: Value = serde_json::from_str(after[..end].trim()).ok()?;
        let name = call.get("name")?.as_str()?.to_string();
        let arguments = call.get("arguments").cloned().unwrap_or_else(|| json!({}));
        calls.push(ToolCall {
            id: unique_id("call", 24),
            kind: "function".into(),
            function: FunctionCall {
                name,
                arguments: arguments.to_string(),
            },
        });
        rest = after[end + CALL_CLOSE.len()..].trim_start();
    }
    rest.is_empty().then_some(calls)
}

/// An assistant message's calls as the model writes them.
pub fn render_calls(calls: &[ToolCall]) -> String {
    calls
        .iter()
        .map(|c| {
            // History carries arguments as JSON text; a text that is not
            // JSON goes in as a string.
            let arguments: Value = serde_json::from_str(&c.function.arguments)
                .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
            let call = json!({"name": c.function.name, "arguments": arguments});
            format!("{CALL_OPEN}{call}{CALL_CLOSE}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tool's result as the model reads it.
pub fn render_result(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Tool {
        Tool {
            kind: "function".into(),
            function: FunctionSpec {
                name: name.into(),
                description: Some("d".into()),
                parameters: Some(
                    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
                ),
                strict: None,
            },
        }
    }

    #[test]
    fn calls_round_trip_through_render_and_parse() {
        let calls = parse_calls(
            "<tool_call>{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>\n\
             <tool_call>{\"name\": \"time\", \"arguments\": {}}</tool_call>",
        )
        .unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].function.name, "weather");
        assert_eq!(calls[0].function.arguments, "{\"city\":\"Oslo\"}");
        assert_ne!(calls[0].id, calls[1].id);
        let again = parse_calls(&render_calls(&calls)).unwrap();
        assert_eq!(again[1].function.name, "time");
    }

    #[test]
    fn text_and_broken_calls_are_not_calls() {
        assert!(parse_calls("It is sunny.").is_none());
        assert!(parse_calls("<tool_call>{\"name\": \"weather\"").is_none());
        assert!(parse_calls(
            "<tool_call>{\"name\": \"w\", \"arguments\": {}}</tool_call> and text"
        )
        .is_none());
    }

    #[test]
    fn the_choice_decides_the_grammar() {
        let tools = [tool("weather"), tool("time")];
        let auto = tool_use(&tools, None, true).unwrap().unwrap();
        assert!(auto
            .grammar
            .as_deref()
            .unwrap()
            .starts_with("start: TEXT | call (\"\\n\" call)*"));
        let required = tool_use(&tools, Some(&ToolChoice::Mode(ToolMode::Required)), false)
            .unwrap()
            .unwrap();
        assert!(required
            .grammar
            .as_deref()
            .unwrap()
            .starts_with("start: call\n"));
        let none = tool_use(&tools, Some(&ToolChoice::Mode(ToolMode::None)), true)
            .unwrap()
            .unwrap();
        assert!(none.grammar.is_none() && !none.parse_calls);
        assert!(none.prompt.contains("\"name\":\"weather\""));
        let named = ToolChoice::Named(NamedTool {
            kind: "function".into(),
            function: NamedFunction {
                name: "time".into(),
            },
        });
        let one = tool_use(&tools, Some(&named), true).unwrap().unwrap();
        assert!(one.grammar.unwrap().contains("\"const\":\"time\""));
        let missing = ToolChoice::Named(NamedTool {
            kind: "function".into(),
            function: NamedFunction {
                name: "nope".into(),
            },
        });
        assert!(tool_use(&tools, Some(&missing), true).is_err());
        assert!(tool_use(&[], Some(&ToolChoice::Mode(ToolMode::Required)), true).is_err());
    }
}
