//! Writes a tiny random Gemma-3-shaped model directory (config.json,
//! safetensors, tokenizer.json over the words t0..t63), for trying the server
//! and the CLI in seconds:
//!
//! ```text
//! cargo run --release -p prophetkv-model --features testing --example write_tiny -- /tmp/tiny
//! ```

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: write_tiny DIR");
        std::process::exit(2);
    };
    let dir = std::path::Path::new(&dir);
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    prophetkv_model::testing::write_tiny(dir, prophetkv_model::testing::Tiny::Gemma3);
}
