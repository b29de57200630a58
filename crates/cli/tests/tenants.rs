//! A multi-tenant daemon over real HTTP on the tiny model: tenant B learns
//! nothing of tenant A's documents on any route (bodies, headers, errors,
//! metrics, timing), API keys never reach the logs, and the per-request and
//! per-tenant limits are refused naming the limit.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{agent, Server, TinyServer};
use prophetkv_model::testing::{tiny_text, tokens};
use serde_json::{json, Value};

const KEY_A: &str = "sk-tenant-a-7f3c9e1d2b4a5566";
const KEY_B: &str = "sk-tenant-b-0c8e6a5f4d3b7788";

/// A server with both tenants' keys, `extra` flags and `env`, logging to
/// `log` when given.
fn start(extra: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> TinyServer {
    let keys = format!("{KEY_A},{KEY_B}");
    let mut args = vec!["--api-keys", &keys];
    args.extend_from_slice(extra);
    TinyServer::start(&args, env, log)
}

/// What came back: the status, every header as `name: value` lines, the body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The headers that do not change from one request to the next.
    fn stable_headers(&self) -> Vec<&str> {
        self.headers
            .lines()
            .filter(|l| !l.starts_with("x-request-id:") && !l.starts_with("date:"))
            .collect()
    }
}

fn with_key<B>(request: ureq::RequestBuilder<B>, key: Option<&str>) -> ureq::RequestBuilder<B> {
    match key {
        Some(k) => request.header("Authorization", format!("Bearer {k}")),
        None => request,
    }
}

/// `method path` with `key` and a JSON `body` (POST).
fn call(
    server: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let url = format!("{}{path}", server.base);
    let agent = agent();
    let result = match (method, body) {
        ("GET", None) => with_key(agent.get(&url), key).call(),
        ("DELETE", None) => with_key(agent.delete(&url), key).call(),
        ("POST", Some(body)) => with_key(agent.post(&url), key).send_json(body),
        _ => panic!("no such call: {method} {path}"),
    };
    let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
        .collect();
    Reply {
        status: response.status().as_u16(),
        headers,
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn get(server: &Server, path: &str, key: &str) -> Reply {
    call(server, "GET", path, Some(key), None)
}

fn post(server: &Server, path: &str, key: &str, body: &Value) -> Reply {
    call(server, "POST", path, Some(key), Some(body))
}

/// Tenant A's documents: what B must never see.
struct Secrets {
    ids: Vec<String>,
    names: Vec<String>,
    texts: Vec<String>,
    metadata: String,
}

impl Secrets {
    fn all(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.ids.iter().map(String::as_str).collect();
        all.extend(self.names.iter().map(String::as_str));
        all.extend(self.texts.iter().map(String::as_str));
        all.push(&self.metadata);
        all.push(KEY_A);
        all
    }

    /// Fails when `reply` holds any of A's secrets once what B itself sent
    /// (`sent`) is masked.
    fn assert_absent(&self, what: &str, reply: &Reply, sent: &[&str]) {
        for (part, text) in [("body", &reply.body), ("headers", &reply.headers)] {
            let masked = mask(text, sent);
            for secret in self.all() {
                assert!(
                    !masked.contains(secret),
                    "{what}: the {part} shows tenant A's {secret:?}:\n{masked}"
                );
            }
        }
    }
}

/// `text` with each of `sent` replaced by a placeholder.
fn mask(text: &str, sent: &[&str]) -> String {
    sent.iter()
        .fold(text.to_string(), |t, s| t.replace(s, "<SENT>"))
}

/// Tenant A registers three documents by id and one by text alone, and
/// uses them once (so their caches are warm).
fn register_tenant_a(server: &Server) -> Secrets {
    let names: Vec<String> = (1..=4)
        .map(|i| format!("Alpha Confidential Report {i}"))
        .collect();
    let texts: Vec<String> = (1..=4).map(|i| tiny_text(&tokens(30, 100 + i))).collect();
    let metadata = "alpha-owner-meta-1d9f".to_string();
    let mut ids: Vec<String> = (1..=3).map(|i| format!("alpha-secret-doc-{i}")).collect();
    let mut documents: Vec<Value> = ids
        .iter()
        .zip(&names)
        .zip(&texts)
        .map(|((id, name), text)| json!({"id": id, "name": name, "text": text, "metadata": {"owner": metadata}}))
        .collect();
    documents.push(json!({"name": names[3], "text": texts[3]}));
    let reply = post(
        server,
        "/v1/documents",
        KEY_A,
        &json!({ "documents": documents }),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let auto = reply.json()["data"][3]["id"].as_str().unwrap().to_string();
    ids.push(auto);
    let used = post(
        server,
        "/v1/completions",
        KEY_A,
        &json!({"prompt": "t3", "max_tokens": 2, "documents": [{"id": ids[0]}, {"id": ids[3]}]}),
    );
    assert_eq!(used.status, 200, "{}", used.body);
    Secrets {
        ids,
        names,
        texts,
        metadata,
    }
}

/// An id of the same length as `id` that no tenant ever registered.
fn never_registered(id: &str) -> String {
    let mut never: String = id.chars().rev().collect();
    never.replace_range(..1, "Z");
    never
}

/// The routes that name a document, with `id` in the path or the body.
fn routes_naming(id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let completion = json!({"prompt": "t3", "max_tokens": 2, "documents": [{"id": id}]});
    let mut streamed = completion.clone();
    streamed["stream"] = json!(true);
    let chat = json!({"messages": [{"role": "user", "content": "t3"}], "max_tokens": 2, "documents": [{"id": id}]});
    vec![
        ("GET", format!("/v1/documents/{id}"), None),
        ("DELETE", format!("/v1/documents/{id}"), None),
        ("GET", format!("/v1/documents?after={id}&limit=100"), None),
        ("POST", "/v1/completions".into(), Some(completion)),
        ("POST", "/v1/completions".into(), Some(streamed)),
        ("POST", "/v1/chat/completions".into(), Some(chat)),
    ]
}

/// Every route that names no document, with a body where it takes one.
fn other_routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "/v1/documents", None),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/tiny", None),
        ("POST", "/tokenize", Some(json!({"prompt": "t3 t4"}))),
        ("POST", "/detokenize", Some(json!({"tokens": [3, 4]}))),
        (
            "POST",
            "/v1/completions",
            Some(json!({"prompt": "t3", "max_tokens": 2})),
        ),
        ("GET", "/metrics", None),
        ("GET", "/health", None),
        ("GET", "/ready", None),
        ("GET", "/openapi.json", None),
        ("GET", "/ui", None),
        ("GET", "/", None),
        ("GET", "/ui/app.js", None),
        ("GET", "/ui/style.css", None),
    ]
}

/// Names of the series in a Prometheus exposition.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

#[test]
fn tenant_b_sees_nothing_of_tenant_a_on_any_route() {
    let server = start(&[], &[], None);
    let metrics_before = metric_names(&get(&server, "/metrics", KEY_B).body);
    let secrets = register_tenant_a(&server);

    for id in &secrets.ids {
        let never = never_registered(id);
        assert_eq!(never.len(), id.len());
        for ((method, path, body), (_, never_path, never_body)) in
            routes_naming(id).into_iter().zip(routes_naming(&never))
        {
            let what = format!(
                "B: {method} {path} {}",
                body.as_ref().map_or(String::new(), Value::to_string)
            );
            let reply = call(&server, method, &path, Some(KEY_B), body.as_ref());
            secrets.assert_absent(&what, &reply, &[id]);
            let missing = call(
                &server,
                method,
                &never_path,
                Some(KEY_B),
                never_body.as_ref(),
            );
            assert_eq!(reply.status, missing.status, "{what}: {}", reply.body);
            assert!(matches!(reply.status, 200 | 404), "{what}: {}", reply.body);
            assert_eq!(
                mask(&reply.body, &[id]),
                mask(&missing.body, &[&never]),
                "{what}: A's document answers unlike a document nobody registered"
            );
            assert_eq!(reply.stable_headers(), missing.stable_headers(), "{what}");
        }
    }

    for (method, path, body) in other_routes() {
        let what = format!("B: {method} {path}");
        let reply = call(&server, method, path, Some(KEY_B), body.as_ref());
        assert_eq!(reply.status, 200, "{what}: {}", reply.body);
        secrets.assert_absent(&what, &reply, &[]);
    }
    let list = get(&server, "/v1/documents", KEY_B).json();
    assert_eq!(list["data"], json!([]), "B's list: {list}");
    assert_eq!(list["has_more"], json!(false));

    // A's text sent inline by B is B's own: computed, not A's cache.
    for text in &secrets.texts {
        let body = json!({"prompt": "t3", "max_tokens": 2, "documents": [{"text": text}]});
        let reply = post(&server, "/v1/completions", KEY_B, &body);
        assert_eq!(reply.status, 200, "{}", reply.body);
        secrets.assert_absent("B: A's text inline", &reply, &[text]);
        let hits = &reply.json()["prophetkv"]["cache_hits"];
        assert_eq!(hits["computed"], json!(1), "B was served A's cache: {hits}");
    }

    // Metrics: no series appeared because A has documents, none per tenant.
    let metrics = get(&server, "/metrics", KEY_B).body;
    assert!(!metrics.contains("tenant"), "{metrics}");
    assert_eq!(metric_names(&metrics), metrics_before, "{metrics}");

    // B's own documents never touch A's: same id, same text.
    let same_id = post(
        &server,
        "/v1/documents",
        KEY_B,
        &json!({"id": secrets.ids[0], "text": tiny_text(&tokens(10, 7))}),
    );
    assert_eq!(same_id.status, 201, "{}", same_id.body);
    let same_text = post(
        &server,
        "/v1/documents",
        KEY_B,
        &json!({"text": secrets.texts[3]}),
    );
    assert_eq!(same_text.status, 201, "{}", same_text.body);
    let b_id = same_text.json()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        b_id, secrets.ids[3],
        "an id derived from the text must not reveal A's"
    );

    // A's documents are intact.
    let list = get(&server, "/v1/documents?limit=100", KEY_A).json();
    assert_eq!(list["data"].as_array().map(Vec::len), Some(4), "{list}");
    for (id, text) in secrets.ids.iter().zip(&secrets.texts) {
        let doc = get(&server, &format!("/v1/documents/{id}"), KEY_A);
        assert_eq!(doc.status, 200, "{}", doc.body);
        assert_eq!(doc.json()["text"].as_str(), Some(text.as_str()));
    }
    let used = post(
        &server,
        "/v1/completions",
        KEY_A,
        &json!({"prompt": "t3", "max_tokens": 2, "documents": [{"id": secrets.ids[1]}]}),
    );
    assert_eq!(used.status, 200, "{}", used.body);
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn another_tenants_document_is_refused_as_fast_as_a_missing_one() {
    let server = start(&[], &[], None);
    let secrets = register_tenant_a(&server);
    let existing = format!("/v1/documents/{}", secrets.ids[0]);
    let missing = format!("/v1/documents/{}", never_registered(&secrets.ids[0]));
    let time = |path: &str| {
        let started = Instant::now();
        let reply = get(&server, path, KEY_B);
        assert_eq!(reply.status, 404, "{}", reply.body);
        started.elapsed()
    };
    for _ in 0..5 {
        time(&existing);
        time(&missing);
    }
    let (mut a, mut never) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        a.push(time(&existing));
        never.push(time(&missing));
    }
    let (a, never) = (median(a), median(never));
    println!("median 404: A's id {a:?}, never registered {never:?}");
    let (slow, fast) = (a.max(never), a.min(never));
    assert!(
        slow <= fast * 3 || slow - fast < Duration::from_millis(3),
        "A's id {a:?} vs a missing id {never:?}: the difference tells B that A has it"
    );
}

#[test]
fn api_keys_never_appear_in_the_server_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let wrong = "sk-wrong-guess-9a8b7c6d5e";
    {
        let server = start(&[], &[("RUST_LOG", "trace")], Some(&log));
        let doc = json!({"id": "k-doc", "text": tiny_text(&tokens(10, 3))});
        assert_eq!(post(&server, "/v1/documents", KEY_A, &doc).status, 201);
        assert_eq!(get(&server, "/v1/documents/k-doc", KEY_A).status, 200);
        let answer = json!({"prompt": "t3", "max_tokens": 2, "documents": [{"id": "k-doc"}]});
        assert_eq!(post(&server, "/v1/completions", KEY_A, &answer).status, 200);
        assert_eq!(get(&server, "/v1/documents/k-doc", KEY_B).status, 404);
        for key in [Some(wrong), Some(&KEY_A[..10]), None] {
            let reply = call(&server, "GET", "/v1/documents", key, None);
            assert_eq!(reply.status, 401, "{key:?}: {}", reply.body);
            let reply = call(&server, "POST", "/v1/completions", key, Some(&answer));
            assert_eq!(reply.status, 401, "{key:?}: {}", reply.body);
            assert!(!reply.body.contains("sk-"), "{}", reply.body);
        }
        assert_eq!(
            call(&server, "GET", "/metrics", Some(KEY_A), None).status,
            200
        );
    } // The server is killed here, its log complete.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("status=401") && text.contains("status=201") && text.contains("DEBUG"),
        "the log was not captured at the debug level:\n{text}"
    );
    for secret in [
        KEY_A,
        KEY_B,
        wrong,
        "7f3c9e1d2b4a",
        "0c8e6a5f4d3b",
        "9a8b7c6d5e",
    ] {
        assert!(!text.contains(secret), "the log shows {secret:?}");
    }
}

/// The error of a refused call: its message, `param` and `type`.
fn refusal(reply: &Reply, status: u16) -> (String, Value, Value) {
    assert_eq!(reply.status, status, "{}", reply.body);
    let error = &reply.json()["error"];
    (
        error["message"].as_str().unwrap_or_default().to_string(),
        error["param"].clone(),
        error["type"].clone(),
    )
}

#[test]
fn limits_and_tenant_quotas_are_refused_naming_the_limit_and_the_value() {
    let server = start(
        &[
            "--max-documents",
            "2",
            "--max-document-tokens",
            "20",
            "--tenant-max-documents",
            "3",
            "--tenant-max-tokens",
            "50",
        ],
        &[],
        None,
    );
    let short = |seed: u64| tiny_text(&tokens(5, seed));
    let long = tiny_text(&tokens(25, 9));

    let three = json!({"prompt": "t3", "max_tokens": 2,
        "documents": [{"text": short(1)}, {"text": short(2)}, {"text": short(3)}]});
    let (message, param, _) = refusal(&post(&server, "/v1/completions", KEY_A, &three), 400);
    assert!(
        message.contains("max_documents")
            && message.contains("at most 2")
            && message.contains("got 3"),
        "{message}"
    );
    assert_eq!(param, json!("documents"));

    let (message, param, _) = refusal(
        &post(&server, "/v1/documents", KEY_A, &json!({"text": long})),
        422,
    );
    assert!(
        message.contains("max_document_tokens") && message.contains("at most 20"),
        "{message}"
    );
    assert_eq!(param, json!("text"));
    let inline = json!({"prompt": "t3", "max_tokens": 2, "documents": [{"text": long}]});
    let (message, param, _) = refusal(&post(&server, "/v1/completions", KEY_A, &inline), 422);
    assert!(
        message.contains("max_document_tokens") && message.contains("documents[0]"),
        "{message}"
    );
    assert_eq!(param, json!("documents"));

    // Three documents fill A's quota; a fourth is refused and nothing stored.
    let docs: Vec<Value> = (1..=3)
        .map(|i| json!({"id": format!("q{i}"), "text": short(10 + i)}))
        .collect();
    assert_eq!(
        post(&server, "/v1/documents", KEY_A, &json!(docs)).status,
        201
    );
    let fourth = json!([{"id": "q4", "text": short(20)}, {"id": "q1", "text": short(11)}]);
    let reply = post(&server, "/v1/documents", KEY_A, &fourth);
    let (message, _, kind) = refusal(&reply, 429);
    assert_eq!(kind, json!("insufficient_quota"));
    assert_eq!(reply.json()["error"]["code"], json!("insufficient_quota"));
    assert!(!reply.headers.contains("retry-after"), "{}", reply.headers);
    assert!(
        message.contains("store.tenant_max_documents is 3")
            && message.contains("holds 3")
            && message.contains("add 1"),
        "{message}"
    );
    assert_eq!(get(&server, "/v1/documents/q4", KEY_A).status, 404);

    // B's quota is its own; its tokens run out at 50.
    let twenty = |seed: u64| tiny_text(&tokens(20, seed));
    let two = json!([{"id": "b1", "text": twenty(30)}, {"id": "b2", "text": twenty(31)}]);
    assert_eq!(post(&server, "/v1/documents", KEY_B, &two).status, 201);
    let (message, _, _) = refusal(
        &post(
            &server,
            "/v1/documents",
            KEY_B,
            &json!({"id": "b3", "text": twenty(32)}),
        ),
        429,
    );
    assert!(
        message.contains("store.tenant_max_tokens is 50 tokens") && message.contains("holds 40"),
        "{message}"
    );

    // Deleting frees room at once.
    assert_eq!(
        call(&server, "DELETE", "/v1/documents/q2", Some(KEY_A), None).status,
        200
    );
    assert_eq!(
        post(
            &server,
            "/v1/documents",
            KEY_A,
            &json!({"id": "q4", "text": short(20)})
        )
        .status,
        201
    );
    let list = get(&server, "/v1/documents", KEY_A).json();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, ["q1", "q3", "q4"]);
}
