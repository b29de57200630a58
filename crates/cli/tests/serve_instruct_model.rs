//! `prophetkv serve` on the instruction-tuned SmolLM2-135M-Instruct over
//! real HTTP, driven by the clients people use: structured output on 20
//! schemas and tool calls through the official `openai` package
//! (`tests/structured_output.py`), and LangChain's `ChatOpenAI`
//! (`with_structured_output`, `bind_tools`, streaming with documents;
//! `tests/langchain_client.py`).
//!
//! Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf` and the `.venv` (`make
//! test` sets up both).

mod common;

use common::{run_venv_script, Server};
use prophetkv_model::testing::instruct_model_path;

fn start() -> Server {
    Server::start(&instruct_model_path(), &[])
}

#[test]
fn json_schema_output_validates_on_twenty_schemas_and_tool_calls_round_trip() {
    let server = start();
    let stdout = run_venv_script("structured_output.py", &["--base-url", &server.base]);
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn langchain_structured_output_and_bound_tools_work() {
    let server = start();
    let stdout = run_venv_script("langchain_client.py", &["--base-url", &server.base]);
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
