//! The whole HTTP API fuzzed from its own OpenAPI document (schemathesis,
//! `tests/schemathesis_check.py`) against `prophetkv serve` on a tiny model:
//! no input gets a 5xx, and every response is one the document declares.

mod common;

use common::{run_venv_script, Server, TINY_ARGS};
use prophetkv_model::testing::{write_tiny, Tiny};

#[test]
fn schemathesis_finds_no_server_error_or_schema_mismatch_over_the_whole_api() {
    let model = tempfile::tempdir().unwrap();
    write_tiny(model.path(), Tiny::Gemma3);
    // A chat request that sets no max_tokens stays short; the script caps
    // the generated ones.
    let mut args = TINY_ARGS.to_vec();
    args.extend(["--chat-max-tokens", "4"]);
    let server = Server::start(model.path(), &args);
    let stdout = run_venv_script("schemathesis_check.py", &[&server.base]);
    let count = |label: &str| -> usize {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(label)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"))
    };
    assert!(
        count("generated requests:") >= 100,
        "too few requests to cover the API"
    );
    assert_eq!(count("failures:"), 0);
}
