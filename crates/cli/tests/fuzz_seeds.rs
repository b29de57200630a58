//! The fuzz targets' seed corpora (fuzz/), made from the test suite's own
//! inputs: tiny models as GGUF files and model directories, stored KV blobs,
//! request bodies and tokenizer strings. Each seed must be accepted by the
//! code it seeds, so that fuzzing starts from inputs that reach deep.
//! With `PROPHETKV_FUZZ_SEEDS=DIR` they are also written to `DIR/<target>/`
//! (`make fuzz-smoke` does this).

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use prophetkv_engine::validate::Limits;
use prophetkv_engine::{ProphetOptions, StrategyKind};
use prophetkv_model::testing::{tokens, write_tiny, Tiny, ALL};
use prophetkv_model::{load_model, DocCache, TextTokenizer};
use prophetkv_server::chat_template::ChatTemplate;
use prophetkv_server::openai::{ChatRequest, CompletionRequest, Defaults};
use prophetkv_store::{Codec, KvDtype};
use serde_json::{json, Value as Json};

/// What the fuzz targets share (their codec's identity, the model-directory
/// framing): compiled here too, so that the seeds are made by the same code
/// the targets read them with, and `make test` keeps the fuzz crate's library
/// building. The targets' real-model helpers go unused here.
#[allow(dead_code)]
#[path = "../../../fuzz/src/lib.rs"]
mod fuzz_support;

use fuzz_support::{
    blob_identity, blob_key, f32_load, join_model_dir, split_model_dir, BLOB_ANCHOR, BLOB_SHAPE,
};

/// Where seeds go: `PROPHETKV_FUZZ_SEEDS/<target>/<name>`, or nowhere.
struct Seeds(Option<PathBuf>);

impl Seeds {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        if let Some(dir) = &self.0 {
            let dir = dir.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// GGUF's name for a tiny model's (Hugging Face) weight name.
fn gguf_name(hf: &str, kind: Tiny) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, part) = rest.split_once('.').unwrap();
    let post_attention = match kind {
        Tiny::Gemma3 => "post_attention_norm.weight",
        _ => "ffn_norm.weight",
    };
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "post_attention_layernorm.weight" => post_attention,
        "pre_feedforward_layernorm.weight" => "ffn_norm.weight",
        "post_feedforward_layernorm.weight" => "post_ffw_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("no GGUF name for {other}"),
    };
    format!("blk.{layer}.{part}")
}

/// The tiny model of `kind` as a GGUF file: its hyper-parameters, a byte-level
/// (Llama family) or SentencePiece (Gemma) vocabulary of 64 tokens, a chat
/// template, and its weights (Q8_0 where rows allow, else F16; norms F32).
fn tiny_gguf(kind: Tiny) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), kind);
    let config: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let weights =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let arch = match kind {
        Tiny::Gemma3 => "gemma3",
        Tiny::Llama => "llama",
        Tiny::Qwen3 => "qwen3",
        Tiny::Qwen2 => "qwen2",
    };
    let n = |k: &str| Value::U32(config[k].as_u64().unwrap() as u32);
    let key = |k: &str| format!("{arch}.{k}");
    let vocab = config["vocab_size"].as_u64().unwrap() as usize;
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (key("embedding_length"), n("hidden_size")),
        (key("block_count"), n("num_hidden_layers")),
        (key("attention.head_count"), n("num_attention_heads")),
        (key("attention.head_count_kv"), n("num_key_value_heads")),
        (key("attention.key_length"), n("head_dim")),
        (key("feed_forward_length"), n("intermediate_size")),
        (key("context_length"), n("max_position_embeddings")),
        (
            key("rope.freq_base"),
            Value::F32(config["rope_theta"].as_f64().unwrap() as f32),
        ),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        (
            "tokenizer.chat_template".into(),
            Value::String(
                "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
                 {% if add_generation_prompt %}<|assistant|>{% endif %}"
                    .into(),
            ),
        ),
    ];
    // Three control tokens, printable single characters, and one merge of two.
    let pieces: Vec<String> = ["<unk>", "<s>", "</s>"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..vocab - 4).map(|i| char::from(b'!' + i as u8).to_string()))
        .chain(["!\"".to_string()])
        .collect();
    let types = (0..vocab).map(|i| Value::I32(if i < 3 { 3 } else { 1 }));
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    meta.push(("tokenizer.ggml.tokens".into(), strings(&pieces)));
    meta.push((
        "tokenizer.ggml.token_type".into(),
        Value::Array(types.collect()),
    ));
    if matches!(kind, Tiny::Gemma3) {
        meta.push((key("attention.sliding_window"), n("sliding_window")));
        meta.push(("tokenizer.ggml.model".into(), Value::String("llama".into())));
        let scores = (0..vocab).map(|i| Value::F32(-(i as f32)));
        meta.push((
            "tokenizer.ggml.scores".into(),
            Value::Array(scores.collect()),
        ));
    } else {
        meta.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
        let merges = vec!["! \"".to_string()];
        meta.push(("tokenizer.ggml.merges".into(), strings(&merges)));
    }
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|name| {
            let t = &weights[name];
            let dtype = match t.dims() {
                [_] => GgmlDType::F32,
                [_, cols] if cols % 32 == 0 => GgmlDType::Q8_0,
                _ => GgmlDType::F16,
            };
            (gguf_name(name, kind), QTensor::quantize(t, dtype).unwrap())
        })
        .collect();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &meta_refs, &tensor_refs).unwrap();
    bytes.into_inner()
}

/// A tiny model directory framed as the `hf_model` target reads it: a
/// little-endian u32 length, config.json, then model.safetensors.
fn tiny_dir_input(kind: Tiny) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), kind);
    let config = std::fs::read(dir.path().join("config.json")).unwrap();
    let weights = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    join_model_dir(&config, &weights)
}

fn check_models(seeds: &Seeds) {
    let scratch = tempfile::tempdir().unwrap();
    for kind in ALL {
        let name = format!("{kind:?}").to_lowercase();
        let gguf = tiny_gguf(kind);
        let path = scratch.path().join(format!("{name}.gguf"));
        std::fs::write(&path, &gguf).unwrap();
        let model = load_model(&path, &f32_load())
            .unwrap_or_else(|e| panic!("the {name} GGUF seed does not load: {e}"));
        let layers = if matches!(kind, Tiny::Gemma3) { 3 } else { 2 };
        assert_eq!(model.config().num_layers(), layers);
        let tokenizer = TextTokenizer::from_path(&path)
            .unwrap_or_else(|e| panic!("the {name} GGUF seed's vocabulary does not load: {e}"));
        assert!(!tokenizer.encode("#$%&").unwrap().is_empty());
        seeds.put("gguf", &name, &gguf);

        let framed = tiny_dir_input(kind);
        let (config, weights) = split_model_dir(&framed).unwrap();
        let dir = scratch.path().join(&name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        std::fs::write(dir.join("model.safetensors"), weights).unwrap();
        load_model(&dir, &f32_load())
            .unwrap_or_else(|e| panic!("the {name} model directory seed does not load: {e}"));
        seeds.put("hf_model", &name, &framed);
    }
}

fn check_blobs(seeds: &Seeds) {
    let (layers, kv_heads, head_dim) = BLOB_SHAPE;
    let identity = blob_identity();
    let key = blob_key();
    for len in [1, 5] {
        let layer = |seed: u64| {
            let t = Tensor::randn(0f32, 1.0, (len, kv_heads, head_dim), &Device::Cpu).unwrap();
            (t.clone(), (t * seed as f64).unwrap())
        };
        let cache = DocCache::from_parts(
            BLOB_ANCHOR.to_vec(),
            tokens(len, len as u64),
            (0..layers as u64).map(layer).collect(),
        )
        .unwrap();
        for dtype in [KvDtype::F16, KvDtype::Bf16, KvDtype::F32] {
            let codec = Codec::new(&identity, dtype);
            let blob = codec.encode(&cache, &key).unwrap();
            let back = codec.decode(&blob, &key).unwrap();
            assert_eq!(back.tokens(), cache.tokens());
            assert_eq!(back.layers()[0].0.dtype(), DType::F32);
            seeds.put("kv_blob", &format!("{len}-{dtype:?}").to_lowercase(), &blob);
        }
    }
}

/// Request bodies over the API's features; the first byte is the `request`
/// target's choice (high bit: completions; low bits: Gemma's template,
/// SmolLM2's, the plain layout).
fn requests() -> Vec<(&'static str, u8, Json)> {
    let docs = json!([{"text": "The code is 74547."}, {"id": "handbook"}]);
    vec![
        (
            "chat-plain",
            2,
            json!({"messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "chat-docs",
            0,
            json!({
            "model": "served", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the code?"}],
            "documents": docs, "kv_reuse": {"strategy": "prophetkv", "recompute_ratio": 0.3},
            "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 3, "max_tokens": 32,
            "stop": ["\n", "END"], "stream": true, "stream_options": {"include_usage": true}}),
        ),
        (
            "chat-smollm2-prefill",
            1,
            json!({"messages": [
            {"role": "user", "content": "Name a color."},
            {"role": "assistant", "content": "The color is"}],
            "logprobs": true, "top_logprobs": 3, "presence_penalty": 0.5,
            "frequency_penalty": -0.5, "logit_bias": {"42": -100, "7": 5.5}}),
        ),
        (
            "chat-json-schema",
            1,
            json!({"messages": [{"role": "user", "content": "A person"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {
                "type": "object", "properties": {"name": {"type": "string"},
                "age": {"type": "integer", "minimum": 0}}, "required": ["name"]}}}}),
        ),
        (
            "chat-json-object",
            0,
            json!({"messages": [{"role": "user", "content": "JSON"}],
            "response_format": {"type": "json_object"}}),
        ),
        (
            "chat-tools",
            1,
            json!({"messages": [
            {"role": "user", "content": "Weather in Paris?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Weather", "parameters": {"type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": "required"}),
        ),
        (
            "chat-parts",
            0,
            json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Part one. "}, {"type": "text", "text": "Part two."}]}],
            "prophetkv": {"explain": true}}),
        ),
        (
            "completion-docs",
            0x80,
            json!({"prompt": "The code is", "max_tokens": 8,
            "documents": docs, "kv_reuse": {"strategy": "cacheblend", "recompute_ratio": 0.15},
            "logprobs": 2, "echo": false, "stop": "\n\n"}),
        ),
        (
            "completion-ids",
            0x80,
            json!({"prompt": [2, 651, 6037], "max_tokens": 4, "n": 1}),
        ),
        (
            "completion-echo",
            0x80,
            json!({"prompt": "Hello", "echo": true, "best_of": 1,
            "kv_reuse": {"strategy": "full"}}),
        ),
    ]
}

fn check_requests(seeds: &Seeds) {
    let tokenizer =
        TextTokenizer::from_path(&prophetkv_model::testing::instruct_model_path()).unwrap();
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.token(i)).unwrap_or_default();
    let template = ChatTemplate::new(
        tokenizer.chat_template().unwrap(),
        &token(tokenizer.bos()),
        &token(tokenizer.eos().first().copied()),
    )
    .unwrap();
    let defaults = Defaults {
        model: "served".into(),
        strategy: StrategyKind::ProphetKv,
        ratio: 0.2,
        prophet: ProphetOptions::default(),
        chat_max_tokens: 256,
        chat_template: Some(template.into()),
    };
    let limits = Limits {
        num_layers: 30,
        vocab_size: 49_152,
        context: 8192,
        anchor: 12,
        max_documents: prophetkv_engine::validate::DEFAULT_MAX_DOCUMENTS,
        document_tokens: 0,
        first_document_exact: true,
    };
    for (name, choice, body) in requests() {
        let bytes = serde_json::to_vec(&body).unwrap();
        let mapped = if choice & 0x80 == 0 {
            serde_json::from_slice::<ChatRequest>(&bytes)
                .unwrap()
                .map(&defaults, "tenant")
        } else {
            serde_json::from_slice::<CompletionRequest>(&bytes)
                .unwrap()
                .map(&defaults, "tenant")
        };
        let mapped = mapped.unwrap_or_else(|e| panic!("{name} is refused: {e:?}"));
        limits
            .validate(mapped.request)
            .unwrap_or_else(|e| panic!("{name} does not validate: {e}"));
        let mut input = vec![choice];
        input.extend_from_slice(&bytes);
        seeds.put("request", name, &input);
    }
}

/// The reference tests' tokenizer strings and prompts.
fn tokenizer_strings() -> Vec<String> {
    let path = prophetkv_model::testing::workspace_root()
        .join("crates/model/tests/data/reference-prompts.json");
    let data: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let strings = data["tokenizer"].as_array().unwrap().iter();
    let prompts = data["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["text"]);
    strings
        .chain(prompts)
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn check_tokenizer_strings(seeds: &Seeds) {
    let strings = tokenizer_strings();
    assert!(strings.len() >= 12, "{} strings", strings.len());
    let gemma = TextTokenizer::from_path(&prophetkv_model::testing::default_model_path()).unwrap();
    let smollm2 =
        TextTokenizer::from_path(&prophetkv_model::testing::instruct_model_path()).unwrap();
    for (i, text) in strings.iter().enumerate() {
        for tokenizer in [&gemma, &smollm2] {
            let ids = tokenizer.encode(text).unwrap();
            assert_eq!(&tokenizer.decode(&ids).unwrap(), text, "round trip");
        }
        seeds.put("tokenizer", &format!("string-{i}"), text.as_bytes());
    }
}

#[test]
fn fuzz_seeds_are_inputs_the_code_under_test_accepts() {
    let seeds = Seeds(std::env::var_os("PROPHETKV_FUZZ_SEEDS").map(PathBuf::from));
    check_models(&seeds);
    check_blobs(&seeds);
    check_requests(&seeds);
    check_tokenizer_strings(&seeds);
    if let Some(dir) = &seeds.0 {
        println!("seeds written to {}", Path::new(dir).display());
    }
}
