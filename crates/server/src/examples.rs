//! Request-body examples of the OpenAPI document: each a request the server
//! answers with 200 (201 for registration) on any served model, so that a
//! reader can copy them and a fuzzer (tests/schemathesis_check.py) starts
//! from bodies that reach the model. None names a model: `model` is optional.

use serde_json::{json, Value};

const PARIS: &str = "Paris is the capital and largest city of France.";
const ROME: &str = "Rome is the capital city of Italy.";

/// A chat question alone.
pub fn chat_plain() -> Value {
    json!({
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}
        ],
        "max_tokens": 8,
        "temperature": 0
    })
}

/// A chat question over inline documents, with a reuse strategy and
/// log-probabilities.
pub fn chat_documents() -> Value {
    json!({
        "messages": [{"role": "user", "content": "Which city is the capital of Italy?"}],
        "documents": [{"text": PARIS}, {"text": ROME}],
        "kv_reuse": {"strategy": "prophetkv", "recompute_ratio": 0.2},
        "max_completion_tokens": 8,
        "logprobs": true,
        "top_logprobs": 2,
        "seed": 7,
        "stop": ["\n"]
    })
}

/// A streamed chat answer with a final usage chunk.
pub fn chat_stream() -> Value {
    json!({
        "messages": [{"role": "user", "content": "Name a city in France."}],
        "max_tokens": 8,
        "stream": true,
        "stream_options": {"include_usage": true}
    })
}

/// A chat answer held to a JSON schema (constrained decoding).
pub fn chat_json_schema() -> Value {
    json!({
        "messages": [{"role": "user", "content": "Give the capital of France as JSON."}],
        "max_tokens": 16,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "capital",
                "schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"]
                }
            }
        }
    })
}

/// A chat with a function to call.
pub fn chat_tools() -> Value {
    json!({
        "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
        "max_tokens": 24,
        "tools": [{
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"]
                }
            }
        }],
        "tool_choice": "auto"
    })
}

/// A completion of text after inline documents.
pub fn completion_documents() -> Value {
    json!({
        "prompt": "The capital of France is",
        "documents": [{"text": PARIS}, {"text": ROME}],
        "kv_reuse": {"strategy": "cacheblend", "recompute_ratio": 0.3},
        "max_tokens": 8,
        "temperature": 0
    })
}

/// A streamed completion with log-probabilities.
pub fn completion_stream() -> Value {
    json!({
        "prompt": "Once upon a time",
        "max_tokens": 8,
        "logprobs": 2,
        "stream": true,
        "stream_options": {"include_usage": true}
    })
}

/// A completion that echoes its prompt.
pub fn completion_echo() -> Value {
    json!({"prompt": ["The capital of Italy is"], "max_tokens": 4, "echo": true, "top_p": 0.9})
}

/// One document to register.
pub fn register_one() -> Value {
    json!({"id": "paris", "name": "Paris", "text": PARIS, "metadata": {"source": "atlas"}})
}

/// Several documents to register.
pub fn register_many() -> Value {
    json!({"documents": [{"text": PARIS}, {"id": "rome", "text": ROME}]})
}

/// Text to tokenize.
pub fn tokenize() -> Value {
    json!({"prompt": "The capital of France is", "add_special_tokens": true})
}

/// Token ids to turn into text.
pub fn detokenize() -> Value {
    json!({"tokens": [1, 2, 3]})
}
