//! Prefill and decode throughput of our two weight paths next to
//! candle-transformers' stock `quantized_gemma3`, on the same GGUF file, in one run.
//!
//! ```text
//! cargo run --release -p prophetkv-model --example runtime_bench -- \
//!     [--model models/gemma-3-270m-q4_k_m.gguf] [--runs 3] [--prefill 512,2048] [--decode-after 1024] [--decode-tokens 32]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_gemma3;
use prophetkv_model::{load_model, LoadOptions, Model, TextTokenizer, WeightPath};

struct Args {
    model: PathBuf,
    runs: usize,
    prefill: Vec<usize>,
    decode_after: usize,
    decode_tokens: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: PathBuf::from("models/gemma-3-270m-q4_k_m.gguf"),
        runs: 3,
        prefill: vec![512, 2048],
        decode_after: 1024,
        decode_tokens: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => args.model = value.into(),
            "--runs" => args.runs = value.parse().expect("--runs"),
            "--prefill" => {
                args.prefill = value
                    .split(',')
                    .map(|x| x.parse().expect("--prefill"))
                    .collect()
            }
            "--decode-after" => args.decode_after = value.parse().expect("--decode-after"),
            "--decode-tokens" => args.decode_tokens = value.parse().expect("--decode-tokens"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// A real-text prompt of exactly `n` tokens (BOS + prose, repeated as needed).
fn prompt(tokenizer: &TextTokenizer, n: usize) -> Vec<u32> {
    let text = "The harbor town grew slowly along the river, where merchants traded salt, \
                timber and wool. Each spring the floods renewed the fields, and the council \
                argued about bridges, taxes and the new lighthouse on the northern cliffs. ";
    let piece = tokenizer.encode(text).expect("tokenize");
    let mut ids = tokenizer.prompt_ids("").expect("bos");
    while ids.len() < n {
        ids.extend_from_slice(&piece);
    }
    ids.truncate(n);
    ids
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

trait Runner {
    fn name(&self) -> &'static str;
    /// Seconds to prefill `ids` and produce last-position logits.
    fn prefill(&mut self, ids: &[u32]) -> f64;
    /// Seconds per token decoding `steps` tokens after prefilling `ids`.
    fn decode(&mut self, ids: &[u32], steps: usize) -> f64;
}

struct Ours(Model, &'static str);

impl Runner for Ours {
    fn name(&self) -> &'static str {
        self.1
    }
    fn prefill(&mut self, ids: &[u32]) -> f64 {
        let positions: Vec<u32> = (0..ids.len() as u32).collect();
        let t = Instant::now();
        let (_, last) = self.0.prefill(ids, &positions).unwrap();
        self.0.logits(&last).unwrap().to_vec2::<f32>().unwrap();
        t.elapsed().as_secs_f64()
    }
    fn decode(&mut self, ids: &[u32], steps: usize) -> f64 {
        let positions: Vec<u32> = (0..ids.len() as u32).collect();
        let (mut kv, _) = self.0.prefill(ids, &positions).unwrap();
        let t = Instant::now();
        let mut token = 506;
        for _ in 0..steps {
            let logits = self.0.decode(&mut [&mut kv], &[token]).unwrap();
            token = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap()[0];
        }
        t.elapsed().as_secs_f64() / steps as f64
    }
}

struct Stock(PathBuf);

impl Stock {
    fn load(&self) -> quantized_gemma3::ModelWeights {
        let mut file = std::fs::File::open(&self.0).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        quantized_gemma3::ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap()
    }
}

impl Runner for Stock {
    fn name(&self) -> &'static str {
        "candle-transformers quantized_gemma3"
    }
    fn prefill(&mut self, ids: &[u32]) -> f64 {
        let mut model = self.load();
        let x = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let t = Instant::now();
        model.forward(&x, 0).unwrap().to_vec2::<f32>().unwrap();
        t.elapsed().as_secs_f64()
    }
    fn decode(&mut self, ids: &[u32], steps: usize) -> f64 {
        let mut model = self.load();
        let x = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        model.forward(&x, 0).unwrap();
        let t = Instant::now();
        let mut token = 506u32;
        for i in 0..steps {
            let x = Tensor::new(&[token], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits = model.forward(&x, ids.len() + i).unwrap();
            token = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap()[0];
        }
        t.elapsed().as_secs_f64() / steps as f64
    }
}

fn main() {
    let args = parse_args();
    let tokenizer = TextTokenizer::from_path(&args.model).expect("tokenizer");
    let load = |path| {
        let options = LoadOptions {
            weight_path: path,
            ..LoadOptions::default()
        };
        load_model(&args.model, &options).expect("model")
    };
    let mut runners: Vec<Box<dyn Runner>> = vec![
        Box::new(Ours(load(WeightPath::Quantized), "prophetkv quantized")),
        Box::new(Ours(load(WeightPath::F32), "prophetkv f32")),
        Box::new(Stock(args.model.clone())),
    ];
    let decode_prompt = prompt(&tokenizer, args.decode_after);
    let mut header = String::from("| path |");
    let mut rule = String::from("|---|");
    for n in &args.prefill {
        header += &format!(" prefill {n} (tok/s) |");
        rule += "---:|";
    }
    header += &format!(" decode after {} (tok/s) |", args.decode_after);
    rule += "---:|";
    let mut rows = Vec::new();
    for runner in runners.iter_mut() {
        let mut row = format!("| {} |", runner.name());
        for &n in &args.prefill {
            let ids = prompt(&tokenizer, n);
            runner.prefill(&ids[..n.min(64)]); // warm-up
            let secs: Vec<f64> = (0..args.runs).map(|_| runner.prefill(&ids)).collect();
            let tps = n as f64 / median(secs);
            eprintln!("{}: prefill {n}: {tps:.1} tok/s", runner.name());
            row += &format!(" {tps:.1} |");
        }
        let secs: Vec<f64> = (0..args.runs.min(2))
            .map(|_| runner.decode(&decode_prompt, args.decode_tokens))
            .collect();
        let tps = 1.0 / median(secs);
        eprintln!("{}: decode: {tps:.1} tok/s", runner.name());
        row += &format!(" {tps:.1} |");
        rows.push(row);
    }
    println!("{header}\n{rule}");
    for r in rows {
        println!("{r}");
    }
}
