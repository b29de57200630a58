//! RULER-style task generators: facts hidden in documents of filler prose,
//! with distractor facts of the same shape in the other documents.
//!
//! Deterministic: the same spec and seed give the same file (the random
//! stream is our own, and token counts come from the caller's tokenizer).

mod prose;

use std::fmt;
use std::str::FromStr;

use crate::rng::Rng;
use crate::task::{Match, Task};
use crate::{EvalError, Result};
use prose::{Prose, FIRST_NAMES, LAST_NAMES};

/// The instruction before the documents; the server's default instruction,
/// so that evaluated prompts are the ones the daemon serves.
pub const PREFIX: &str = "Read the documents below and answer the question at the end.\n\n";

/// What a task asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// One key's value among distractor keys in other documents.
    MultiKey,
    /// Both values of one key, in two documents, among distractor keys
    /// (scored `match: all`).
    MultiValue,
    /// A question about one person; every document holds the same kind of
    /// fact about someone else. The answer is a word or number copied from
    /// one document.
    Rag,
}

impl TaskKind {
    /// Every kind.
    pub const ALL: [TaskKind; 3] = [TaskKind::MultiKey, TaskKind::MultiValue, TaskKind::Rag];

    /// The name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::MultiKey => "multi-key",
            TaskKind::MultiValue => "multi-value",
            TaskKind::Rag => "rag",
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskKind {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        TaskKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                EvalError::Invalid(format!(
                    "unknown task kind {s:?} (multi-key, multi-value, rag)"
                ))
            })
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenSpec {
    /// The kind of every task.
    pub kind: TaskKind,
    /// How many tasks.
    pub n: usize,
    /// Target prompt length in tokens (prefix + documents + question).
    pub context_tokens: usize,
    /// Documents per task.
    pub docs: usize,
    /// Seed of the whole file.
    pub seed: u64,
    /// Distractor facts per task, placed in documents drawn at random
    /// (`None`: the kind's own count, a distractor in every document), so
    /// that a small model's full prefill is not already lost among them.
    pub distractors: Option<usize>,
}

const PROJECTS: &[&str] = &[
    "Aurora", "Magnet", "Falcon", "Harbor", "Juniper", "Meridian", "Nimbus", "Orchid", "Pioneer",
    "Quartz", "Saffron", "Tundra", "Vertex", "Willow", "Zephyr", "Beacon", "Cobalt", "Delta",
    "Ember", "Glacier", "Horizon", "Lantern", "Mosaic", "Nova", "Obsidian", "Prism", "Raven",
    "Sierra", "Summit", "Topaz",
];
const CITIES: &[&str] = &[
    "Seoul", "Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Dublin", "Cairo", "Quito", "Vienna",
    "Osaka", "Perth", "Tunis", "Riga", "Dakar", "Bogota", "Manila", "Zagreb", "Porto", "Accra",
];
const JOBS: &[&str] = &[
    "welder",
    "pilot",
    "surgeon",
    "carpenter",
    "librarian",
    "geologist",
    "plumber",
    "violinist",
    "pharmacist",
    "architect",
    "beekeeper",
    "journalist",
    "locksmith",
    "translator",
    "dentist",
];
const INSTRUMENTS: &[&str] = &[
    "cello",
    "trumpet",
    "harp",
    "oboe",
    "accordion",
    "banjo",
    "clarinet",
    "harmonica",
    "bassoon",
    "mandolin",
    "saxophone",
    "ukulele",
    "xylophone",
    "trombone",
    "tuba",
    "sitar",
];
const PETS: &[&str] = &[
    "Biscuit", "Pepper", "Shadow", "Maple", "Ziggy", "Clover", "Rocket", "Juno", "Pixel", "Mochi",
    "Tango", "Olive", "Bandit", "Sunny", "Waffle",
];

/// The fact a task hides, as sentences per document plus the question.
struct Facts {
    /// (document, sentence) pairs; the needle and its distractors.
    placed: Vec<(usize, String)>,
    /// How many of `placed`, from the first, are needles (the rest are distractors).
    needles: usize,
    question: String,
    answers: Vec<String>,
    match_mode: Match,
}

/// Distinct numbers of `digits` digits (fixed width, so that no answer is a
/// substring of another).
fn numbers(rng: &mut Rng, k: usize, digits: u32) -> Vec<String> {
    let (lo, hi) = (10u64.pow(digits - 1), 10u64.pow(digits) - 1);
    let mut out: Vec<String> = Vec::with_capacity(k);
    while out.len() < k {
        let n = rng.range(lo, hi).to_string();
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

fn multi_key(rng: &mut Rng, docs: usize) -> Facts {
    let keys = rng.sample(PROJECTS, docs + 2);
    let codes = numbers(rng, keys.len(), 5);
    let needle_doc = rng.below(docs);
    // The asked key in its document; one distractor key in every document,
    // one more anywhere.
    let mut placed = vec![(needle_doc, 0)];
    placed.extend((0..docs).map(|d| (d, d + 1)));
    placed.extend((docs + 1..keys.len()).map(|k| (rng.below(docs), k)));
    let sentence = |k: usize| {
        format!(
            "The access code for the {} project is {}.",
            keys[k], codes[k]
        )
    };
    Facts {
        placed: placed.into_iter().map(|(d, k)| (d, sentence(k))).collect(),
        question: format!(
            "Question: What is the access code for the {0} project?\nAnswer: The access code for the {0} project is",
            keys[0]
        ),
        answers: vec![codes[0].clone()],
        match_mode: Match::Any,
        needles: 1,
    }
}

fn multi_value(rng: &mut Rng, docs: usize) -> Facts {
    // One key with two values in two documents; distractor keys with one
    // value each in the other documents (all but one of them).
    let keys = rng.sample(PROJECTS, docs.max(2));
    let words = numbers(rng, keys.len() + 1, 5);
    let mut doc_order: Vec<usize> = (0..docs).collect();
    rng.shuffle(&mut doc_order);
    let sentence = |k: usize, w: usize| {
        format!(
            "One of the special magic numbers for the {} project is {}.",
            keys[k], words[w]
        )
    };
    let mut placed = vec![
        (doc_order[0], sentence(0, 0)),
        (doc_order[1], sentence(0, 1)),
    ];
    for k in 1..keys.len() {
        placed.push((doc_order[(k + 1) % docs], sentence(k, k + 1)));
    }
    Facts {
        placed,
        question: format!(
            "Question: What are the two special magic numbers for the {0} project?\nAnswer: The two special magic numbers for the {0} project are",
            keys[0]
        ),
        answers: vec![words[0].clone(), words[1].clone()],
        match_mode: Match::All,
        needles: 2,
    }
}

fn rag(rng: &mut Rng, docs: usize) -> Facts {
    // Distinct people, one per document; the question is about the first.
    let mut people: Vec<String> = Vec::new();
    while people.len() < docs {
        let p = format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES));
        if !people.contains(&p) {
            people.push(p);
        }
    }
    let relation = rng.below(4);
    let values: Vec<String> = match relation {
        0 => rng.sample(CITIES, docs),
        1 => rng.sample(JOBS, docs),
        2 => rng.sample(PETS, docs),
        _ => rng.sample(INSTRUMENTS, docs),
    }
    .into_iter()
    .map(|v| v.to_string())
    .collect();
    let sentence = |i: usize| match relation {
        0 => format!("{} was born in {}.", people[i], values[i]),
        1 => format!("{} works as a {} in a nearby town.", people[i], values[i]),
        2 => format!("{} has a dog named {}.", people[i], values[i]),
        _ => format!("{} plays the {} in the town band.", people[i], values[i]),
    };
    let p = &people[0];
    let question = match relation {
        0 => format!("Question: In which city was {p} born?\nAnswer: {p} was born in"),
        1 => format!("Question: What does {p} work as?\nAnswer: {p} works as a"),
        2 => format!("Question: What is the name of {p}'s dog?\nAnswer: {p}'s dog is named"),
        _ => format!("Question: Which instrument does {p} play?\nAnswer: {p} plays the"),
    };
    let mut order: Vec<usize> = (0..docs).collect();
    rng.shuffle(&mut order);
    // The needle (person 0) first; each document holds one sentence, so the
    // order of `placed` does not change where sentences land.
    let mut placed: Vec<(usize, usize)> = order.into_iter().enumerate().collect();
    placed.sort_by_key(|&(_, i)| i != 0);
    Facts {
        placed: placed.into_iter().map(|(d, i)| (d, sentence(i))).collect(),
        question,
        answers: vec![values[0].clone()],
        match_mode: Match::Any,
        needles: 1,
    }
}

/// Keeps `n` of the distractors in `facts`, drawn at random, and every needle.
fn keep_distractors(facts: &mut Facts, n: usize, rng: &mut Rng) {
    let distractors = facts.placed.split_off(facts.needles);
    let mut kept: Vec<usize> = (0..distractors.len()).collect();
    kept = rng.sample(&kept, n.min(kept.len()));
    kept.sort_unstable();
    facts
        .placed
        .extend(kept.into_iter().map(|i| distractors[i].clone()));
}

/// One document: its header, filler up to `budget` tokens with `facts`
/// inserted at random sentence boundaries, and a trailing blank line.
fn document(
    index: usize,
    facts: Vec<String>,
    budget: usize,
    prose: &mut Prose,
    rng: &mut Rng,
    count: &dyn Fn(&str) -> usize,
) -> String {
    let header = format!("Document {}:\n", index + 1);
    let mut used = count(&header) + facts.iter().map(|f| count(f)).sum::<usize>();
    let mut sentences: Vec<String> = Vec::new();
    prose.new_paragraph();
    while used < budget {
        let s = prose.sentence();
        used += count(&s);
        sentences.push(s);
    }
    for f in facts {
        let at = rng.below(sentences.len() + 1);
        sentences.insert(at, f);
    }
    format!("{header}{}\n\n", sentences.join(" "))
}

/// Generates `spec.n` tasks; `count` gives the token count of a text (the
/// model's tokenizer, so that `context_tokens` holds for that model).
pub fn generate(spec: &GenSpec, count: &dyn Fn(&str) -> usize) -> Result<Vec<Task>> {
    if spec.docs == 0 || spec.n == 0 {
        return Err(EvalError::Invalid(
            "--n and --docs must be at least 1".into(),
        ));
    }
    if spec.kind == TaskKind::MultiValue && spec.docs < 2 {
        return Err(EvalError::Invalid(
            "multi-value tasks spread two values over at least 2 documents".into(),
        ));
    }
    // Every document needs its own distractor value from the smallest list.
    let most = JOBS
        .len()
        .min(PETS.len())
        .min(CITIES.len())
        .min(INSTRUMENTS.len());
    if spec.docs > most {
        return Err(EvalError::Invalid(format!(
            "at most {most} documents per task, got {}",
            spec.docs
        )));
    }
    // Each kind draws from its own stream: the same seed gives unrelated
    // tasks of different kinds.
    let kind_stream = TaskKind::ALL
        .iter()
        .position(|k| *k == spec.kind)
        .unwrap_or(0);
    let root = Rng::new(spec.seed).fork(1 << 32 | kind_stream as u64);
    let mut tasks = Vec::with_capacity(spec.n);
    for i in 0..spec.n {
        let mut rng = root.fork(i as u64);
        let mut prose = Prose::new(rng.fork(u64::MAX));
        let mut facts = match spec.kind {
            TaskKind::MultiKey => multi_key(&mut rng, spec.docs),
            TaskKind::MultiValue => multi_value(&mut rng, spec.docs),
            TaskKind::Rag => rag(&mut rng, spec.docs),
        };
        if let Some(n) = spec.distractors {
            keep_distractors(&mut facts, n, &mut rng);
        }
        let fixed = count(PREFIX) + count(&facts.question);
        let room = spec
            .context_tokens
            .checked_sub(fixed)
            .filter(|r| *r >= 32 * spec.docs);
        let Some(room) = room else {
            return Err(EvalError::Invalid(format!(
                "--context-tokens {} leaves too little room for {} documents",
                spec.context_tokens, spec.docs
            )));
        };
        let budget = room / spec.docs;
        let documents = (0..spec.docs)
            .map(|d| {
                let mine: Vec<String> = facts
                    .placed
                    .iter()
                    .filter(|(doc, _)| *doc == d)
                    .map(|(_, s)| s.clone())
                    .collect();
                document(d, mine, budget, &mut prose, &mut rng, count)
            })
            .collect();
        tasks.push(Task {
            id: format!(
                "{}-s{}-n{}-t{}-{i}",
                spec.kind, spec.seed, spec.docs, spec.context_tokens
            ),
            task: spec.kind.name().into(),
            prefix: PREFIX.into(),
            documents,
            question: facts.question,
            answers: facts.answers,
            match_mode: facts.match_mode,
        });
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn spec(kind: TaskKind, seed: u64) -> GenSpec {
        GenSpec {
            kind,
            n: 5,
            context_tokens: 1000,
            docs: 4,
            seed,
            distractors: None,
        }
    }

    #[test]
    fn generation_is_deterministic_per_seed_and_differs_across_seeds() {
        for kind in TaskKind::ALL {
            let a = generate(&spec(kind, 1), &words).unwrap();
            assert_eq!(a, generate(&spec(kind, 1), &words).unwrap(), "{kind}");
            assert_ne!(a, generate(&spec(kind, 2), &words).unwrap(), "{kind}");
        }
    }

    #[test]
    fn every_answer_is_written_in_exactly_the_documents_the_kind_says() {
        for kind in TaskKind::ALL {
            for t in generate(&spec(kind, 3), &words).unwrap() {
                for a in &t.answers {
                    let holders: Vec<usize> = (0..t.documents.len())
                        .filter(|&d| t.documents[d].contains(a.as_str()))
                        .collect();
                    assert_eq!(holders.len(), 1, "{kind}: {a} in {holders:?}");
                }
                if kind == TaskKind::MultiValue {
                    let holders: Vec<usize> = t
                        .answers
                        .iter()
                        .map(|a| {
                            t.documents
                                .iter()
                                .position(|d| d.contains(a.as_str()))
                                .unwrap()
                        })
                        .collect();
                    assert_ne!(holders[0], holders[1], "values in one document");
                    assert_eq!(t.match_mode, Match::All);
                }
            }
        }
    }

    #[test]
    fn a_distractor_count_keeps_every_needle_and_that_many_other_facts() {
        // Facts are the sentences of the kinds' templates; filler prose has none of their phrases.
        let templates = [
            " project is ",
            " project are ",
            " was born in ",
            " works as a ",
            " has a dog named ",
            " in the town band",
        ];
        let is_fact = |s: &str| templates.iter().any(|t| s.contains(t));
        for kind in TaskKind::ALL {
            for n in [0, 1, 2] {
                let s = GenSpec {
                    distractors: Some(n),
                    ..spec(kind, 6)
                };
                for t in generate(&s, &words).unwrap() {
                    for a in &t.answers {
                        let holders = t.documents.iter().filter(|d| d.contains(a.as_str()));
                        assert_eq!(holders.count(), 1, "{kind}: the needle {a} is kept");
                    }
                    let facts: usize = t
                        .documents
                        .iter()
                        .map(|d| d.split(". ").filter(|x| is_fact(x)).count())
                        .sum();
                    let needles = if kind == TaskKind::MultiValue { 2 } else { 1 };
                    assert_eq!(facts, needles + n, "{kind} with {n} distractors");
                }
            }
        }
    }

    #[test]
    fn contexts_come_close_to_the_target_length() {
        for kind in TaskKind::ALL {
            for t in generate(&spec(kind, 4), &words).unwrap() {
                let total = words(&t.prefix)
                    + t.documents.iter().map(|d| words(d)).sum::<usize>()
                    + words(&t.question);
                assert!((950..=1150).contains(&total), "{kind}: {total} words");
            }
        }
    }

    #[test]
    fn documents_carry_headers_and_trailing_blank_lines() {
        let t = &generate(&spec(TaskKind::Rag, 5), &words).unwrap()[0];
        for (i, d) in t.documents.iter().enumerate() {
            assert!(d.starts_with(&format!("Document {}:\n", i + 1)));
            assert!(d.ends_with(".\n\n"));
        }
        assert!(t.question.starts_with("Question: "));
    }

    #[test]
    fn impossible_specs_are_errors() {
        let mut s = spec(TaskKind::MultiKey, 1);
        s.context_tokens = 50;
        assert!(generate(&s, &words).is_err());
        s = spec(TaskKind::MultiValue, 1);
        s.docs = 1;
        assert!(generate(&s, &words).is_err());
        assert!("needle".parse::<TaskKind>().is_err());
        for kind in TaskKind::ALL {
            let mut s = spec(kind, 1);
            s.docs = 15;
            s.context_tokens = 3000;
            assert!(generate(&s, &words).is_ok(), "{kind} with 15 documents");
            s.docs = 16;
            assert!(generate(&s, &words).is_err(), "{kind} with 16 documents");
        }
    }
}
