//! Prefill and decode throughput of our weight paths next to llama.cpp's
//! `llama-bench` (and, on request, candle-transformers' stock
//! `quantized_gemma3`: `--paths stock`, built with `--features stock`), on the
//! same GGUF file with the same threads, in one run.
//!
//! ```text
//! cargo run --release -p prophetkv-model --example runtime_bench -- \
//!     [--model models/gemma-3-270m-q4_k_m.gguf] [--runs 3] [--prefill 512,2048] \
//!     [--decode-after 1024] [--decode-tokens 32] [--paths mixed,mixed-bf16,q,f32,stock] \
//!     [--llama-bench target/llama.cpp/build/bin/llama-bench] [--threads 2] [--rounds 1]
//! ```
//!
//! With `--rounds N`, every path (llama.cpp first) is measured in each of N
//! rounds and the table shows each cell's median over the rounds.
//!
//! Threads: candle uses every core unless `RAYON_NUM_THREADS` says otherwise;
//! llama-bench gets `--threads` (default: the number of cores).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use prophetkv_model::{load_model, LoadOptions, Model, TextTokenizer, WeightPath};

struct Args {
    model: PathBuf,
    runs: usize,
    prefill: Vec<usize>,
    decode_after: usize,
    decode_tokens: usize,
    paths: Vec<String>,
    llama_bench: Option<PathBuf>,
    threads: usize,
    rounds: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: PathBuf::from("models/gemma-3-270m-q4_k_m.gguf"),
        runs: 3,
        prefill: vec![512, 2048],
        decode_after: 1024,
        decode_tokens: 32,
        paths: vec![
            "mixed-bf16".into(),
            "mixed".into(),
            "q".into(),
            "f32".into(),
        ],
        llama_bench: None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rounds: 1,
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
            "--paths" => args.paths = value.split(',').map(String::from).collect(),
            "--llama-bench" => args.llama_bench = Some(value.into()),
            "--threads" => args.threads = value.parse().expect("--threads"),
            "--rounds" => args.rounds = value.parse().expect("--rounds"),
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
    /// Megabytes the weights occupy, where the runner knows.
    fn resident_mb(&self) -> Option<f64> {
        None
    }
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
    fn resident_mb(&self) -> Option<f64> {
        Some(self.0.resident_bytes() as f64 / 1e6)
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

/// candle-transformers' stock quantized Gemma 3 (`--features stock`).
#[cfg(feature = "stock")]
mod stock {
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use candle_core::quantized::gguf_file;
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_gemma3;

    use super::Runner;

    pub fn runner(model: &Path) -> Box<dyn Runner> {
        Box::new(Stock(model.to_path_buf()))
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
}

#[cfg(not(feature = "stock"))]
mod stock {
    use std::path::Path;

    use super::Runner;

    pub fn runner(_: &Path) -> Box<dyn Runner> {
        panic!("the stock path needs candle-transformers: build with `--features stock`")
    }
}

/// llama-bench's tokens/s for one test, from its JSON output.
fn llama_bench(bin: &Path, model: &Path, threads: usize, runs: usize, test: &[&str]) -> f64 {
    let out = Command::new(bin)
        .args([
            "-m",
            &model.display().to_string(),
            "-t",
            &threads.to_string(),
        ])
        .args(["-fa", "1", "-r", &runs.to_string(), "-o", "json"])
        .args(test)
        .output()
        .expect("run llama-bench");
    assert!(
        out.status.success(),
        "llama-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("llama-bench json");
    rows[0]["avg_ts"].as_f64().expect("avg_ts")
}

/// One row of the table: tokens/s per prefill length, then decode tokens/s.
struct Row {
    name: String,
    prefill: Vec<f64>,
    decode: f64,
    resident_mb: Option<f64>,
}

fn measure(runner: &mut dyn Runner, args: &Args, tokenizer: &TextTokenizer) -> Row {
    let mut prefill = Vec::new();
    for &n in &args.prefill {
        let ids = prompt(tokenizer, n);
        runner.prefill(&ids[..n.min(64)]); // warm-up
        let secs: Vec<f64> = (0..args.runs).map(|_| runner.prefill(&ids)).collect();
        let tps = n as f64 / median(secs);
        eprintln!("{}: prefill {n}: {tps:.1} tok/s", runner.name());
        prefill.push(tps);
    }
    let decode_prompt = prompt(tokenizer, args.decode_after);
    let secs: Vec<f64> = (0..args.runs.min(2))
        .map(|_| runner.decode(&decode_prompt, args.decode_tokens))
        .collect();
    let decode = 1.0 / median(secs);
    eprintln!("{}: decode: {decode:.1} tok/s", runner.name());
    Row {
        name: runner.name().into(),
        prefill,
        decode,
        resident_mb: runner.resident_mb(),
    }
}

fn measure_llama(bin: &Path, args: &Args) -> Row {
    let prefill = args
        .prefill
        .iter()
        .map(|n| {
            let tps = llama_bench(
                bin,
                &args.model,
                args.threads,
                args.runs,
                &["-p", &n.to_string(), "-n", "0"],
            );
            eprintln!("llama.cpp: prefill {n}: {tps:.1} tok/s");
            tps
        })
        .collect();
    let (depth, gen) = (
        args.decode_after.to_string(),
        args.decode_tokens.to_string(),
    );
    let decode = llama_bench(
        bin,
        &args.model,
        args.threads,
        args.runs,
        &["-p", "0", "-n", &gen, "-d", &depth],
    );
    eprintln!("llama.cpp: decode: {decode:.1} tok/s");
    Row {
        name: "llama.cpp llama-bench".into(),
        prefill,
        decode,
        resident_mb: None,
    }
}

fn print_table(args: &Args, rows: &[Row]) {
    let mut header = String::from("| path | weights (MB) |");
    let mut rule = String::from("|---|---:|");
    for n in &args.prefill {
        header += &format!(" prefill {n} (tok/s) |");
        rule += "---:|";
    }
    header += &format!(" decode after {} (tok/s) |", args.decode_after);
    rule += "---:|";
    println!("{header}\n{rule}");
    for r in rows {
        let mb = r.resident_mb.map_or("–".into(), |mb| format!("{mb:.0}"));
        let cells: Vec<String> = r
            .prefill
            .iter()
            .chain([&r.decode])
            .map(|t| format!("{t:.1}"))
            .collect();
        println!("| {} | {mb} | {} |", r.name, cells.join(" | "));
    }
    let Some(llama) = rows.iter().find(|r| r.name.starts_with("llama.cpp")) else {
        return;
    };
    println!("\nRatio to llama.cpp (same run, same threads):\n\n{header}\n{rule}");
    for r in rows.iter().filter(|r| !r.name.starts_with("llama.cpp")) {
        let ratios: Vec<String> = r
            .prefill
            .iter()
            .zip(&llama.prefill)
            .chain([(&r.decode, &llama.decode)])
            .map(|(ours, theirs)| format!("{:.2}×", ours / theirs))
            .collect();
        println!("| {} | | {} |", r.name, ratios.join(" | "));
    }
}

/// Per row and column, the median over the rounds.
fn median_rows(rounds: Vec<Vec<Row>>) -> Vec<Row> {
    let mut rounds = rounds.into_iter();
    let Some(first) = rounds.next() else {
        return Vec::new();
    };
    let rest: Vec<Vec<Row>> = rounds.collect();
    first
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let prefill = (0..row.prefill.len())
                .map(|c| {
                    median(
                        std::iter::once(row.prefill[c])
                            .chain(rest.iter().map(|r| r[i].prefill[c]))
                            .collect(),
                    )
                })
                .collect();
            let decode = median(
                std::iter::once(row.decode)
                    .chain(rest.iter().map(|r| r[i].decode))
                    .collect(),
            );
            Row {
                prefill,
                decode,
                ..row
            }
        })
        .collect()
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
    // Load every path once, then measure all of them (llama.cpp first) in
    // each round: load on a shared machine drifts, and rounds interleave it.
    let mut runners: Vec<Box<dyn Runner>> = args
        .paths
        .iter()
        .map(|path| -> Box<dyn Runner> {
            match path.as_str() {
                "mixed" => Box::new(Ours(load(WeightPath::Mixed), "prophetkv mixed")),
                "mixed-bf16" => Box::new(Ours(
                    load(WeightPath::MixedBf16),
                    "prophetkv mixed-bf16 (default)",
                )),
                "q" => Box::new(Ours(load(WeightPath::Quantized), "prophetkv quantized")),
                "f32" => Box::new(Ours(load(WeightPath::F32), "prophetkv f32")),
                "stock" => stock::runner(&args.model),
                other => panic!("unknown path {other} (mixed, mixed-bf16, q, f32, stock)"),
            }
        })
        .collect();
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        let mut rows = Vec::new();
        if let Some(bin) = &args.llama_bench {
            rows.push(measure_llama(bin, &args));
        }
        for runner in runners.iter_mut() {
            rows.push(measure(runner.as_mut(), &args, &tokenizer));
        }
        rounds.push(rows);
    }
    let rows = median_rows(rounds);
    print_table(&args, &rows);
}
