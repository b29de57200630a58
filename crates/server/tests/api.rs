//! The router on a tiny model, without a socket (`tower::ServiceExt::oneshot`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use prophetkv_engine::testing::{tiny_engine, RedisServer, RemoteConfig, TinyEngine};
use prophetkv_engine::{EngineConfig, ProphetOptions, StrategyKind};
use prophetkv_model::testing::{tiny_text, tokens};
use prophetkv_server::chat_template::ChatTemplate;
use prophetkv_server::openai::Defaults;
use prophetkv_server::{router, AppState, ServerConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

struct App {
    router: Router,
    _engine: TinyEngine,
}

fn app(api_keys: Vec<String>) -> App {
    app_with(api_keys, None)
}

fn app_with(api_keys: Vec<String>, chat_template: Option<Arc<ChatTemplate>>) -> App {
    app_on(
        tiny_engine("t5 ", EngineConfig::default(), None),
        api_keys,
        chat_template,
    )
}

fn app_on(
    tiny: TinyEngine,
    api_keys: Vec<String>,
    chat_template: Option<Arc<ChatTemplate>>,
) -> App {
    let config = ServerConfig {
        api_keys,
        max_body_bytes: 1 << 20,
        defaults: Defaults {
            model: "tiny".into(),
            strategy: StrategyKind::ProphetKv,
            ratio: 0.2,
            prophet: ProphetOptions::default(),
            chat_max_tokens: 16,
            chat_template,
        },
        random_weights: None,
    };
    let state = AppState::new(tiny.engine.clone(), config);
    App {
        router: router(state),
        _engine: tiny,
    }
}

async fn call(
    app: &App,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Body>,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let res = app
        .router
        .clone()
        .oneshot(req.body(body.unwrap_or_else(Body::empty)).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn post(app: &App, uri: &str, body: Value) -> (StatusCode, Value) {
    let (status, text) = call(app, "POST", uri, None, Some(Body::from(body.to_string()))).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn docs() -> Vec<Value> {
    vec![
        json!({"text": tiny_text(&tokens(30, 1))}),
        json!({"text": tiny_text(&tokens(20, 2))}),
    ]
}

#[tokio::test]
async fn completion_returns_text_usage_and_reuse_stats_matching_the_ratio() {
    let app = app(vec![]);
    let (status, body) = post(
        &app,
        "/v1/completions",
        json!({
            "prompt": tiny_text(&tokens(4, 3)), "max_tokens": 5, "temperature": 0,
            "documents": docs(), "kv_reuse": {"strategy": "prophetkv", "recompute_ratio": 0.5}
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(body["choices"][0]["text"].is_string());
    let stats = &body["prophetkv"];
    // The second document (20 rows) is eligible; half of it is recomputed.
    assert_eq!(stats["eligible_tokens"], 20);
    assert_eq!(stats["selected_tokens"], 10);
    assert_eq!(stats["reused_tokens"], 40);
    assert_eq!(stats["cache_hits"]["computed"], 2);
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
}

#[tokio::test]
async fn streaming_chat_sends_role_deltas_finish_usage_and_done() {
    let app = app(vec![]);
    let body = json!({
        "messages": [{"role": "system", "content": "t7 t8"}, {"role": "user", "content": tiny_text(&tokens(4, 4))}],
        "max_tokens": 6, "temperature": 0, "stream": true, "stream_options": {"include_usage": true},
        "documents": docs()
    });
    let (status, text) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        None,
        Some(Body::from(body.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = chunks
        .iter()
        .find(|c| !c["choices"][0]["finish_reason"].is_null())
        .expect("a finish chunk");
    assert!(finish["prophetkv"]["reused_tokens"].as_u64().unwrap() > 0);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // The same request without streaming gives the same text.
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let (_, whole) = post(&app, "/v1/chat/completions", plain).await;
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        whole["choices"][0]["message"]["content"].as_str().unwrap(),
        streamed
    );
}

#[tokio::test]
async fn chat_with_a_template_puts_the_documents_before_the_last_user_text() {
    // In tiny-model tokens: t10 opens a turn, t11 closes it, t12 asks for the answer.
    let template = "{{ bos_token }}{% for m in messages %}t10 {{ m.content }} t11 {% endfor %}\
                    {% if add_generation_prompt %}t12{% endif %}";
    let template = ChatTemplate::new(template, "t1", "t63").unwrap();
    let app = app_with(vec![], Some(Arc::new(template)));
    let (status, body) = post(
        &app,
        "/v1/chat/completions",
        json!({
            "messages": [
                {"role": "user", "content": "t20"},
                {"role": "assistant", "content": "t21 t22"},
                {"role": "user", "content": "t3 t4"}
            ],
            "max_tokens": 2, "temperature": 0, "documents": docs(),
            "kv_reuse": {"strategy": "naive"}
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Anchor: BOS t5. Fresh: t10 t20 t11 t10 t21 t22 t11 t10. Documents: 30 + 20.
    // Query: t3 t4 t11 t12.
    assert_eq!(body["usage"]["prompt_tokens"], 2 + 8 + 50 + 4, "{body}");
    assert_eq!(body["prophetkv"]["reused_tokens"], 50, "{body}");
}

#[tokio::test]
async fn documents_are_registered_listed_read_used_and_deleted_per_api_key() {
    let app = app(vec!["key-a".into(), "key-b".into()]);
    let reg = json!({"id": "notes", "text": tiny_text(&tokens(25, 5))});
    let (status, _) = call(
        &app,
        "POST",
        "/v1/documents",
        None,
        Some(Body::from(reg.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &app,
        "POST",
        "/v1/documents",
        Some("wrong"),
        Some(Body::from(reg.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, text) = call(
        &app,
        "POST",
        "/v1/documents",
        Some("key-a"),
        Some(Body::from(reg.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["data"][0]["tokens"], 25);
    let (_, list_a) = call(&app, "GET", "/v1/documents", Some("key-a"), None).await;
    let (_, list_b) = call(&app, "GET", "/v1/documents", Some("key-b"), None).await;
    assert!(list_a.contains("notes") && !list_b.contains("notes"));
    let (status, _) = call(&app, "GET", "/v1/documents/notes", Some("key-b"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body = json!({"prompt": "t3", "max_tokens": 2, "documents": [{"id": "notes"}]}).to_string();
    let (status, text) = call(
        &app,
        "POST",
        "/v1/completions",
        Some("key-a"),
        Some(Body::from(body.clone())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, _) = call(
        &app,
        "POST",
        "/v1/completions",
        Some("key-b"),
        Some(Body::from(body)),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "tenant B cannot use tenant A's document"
    );
    let (status, _) = call(&app, "DELETE", "/v1/documents/notes", Some("key-b"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, "DELETE", "/v1/documents/notes", Some("key-a"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, "GET", "/v1/documents/notes", Some("key-a"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_requests_get_openai_shaped_errors_with_the_right_status() {
    let app = app(vec![]);
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "/v1/completions",
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            json!({"prompt": 5}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            json!({"prompt": "t3", "max_tokens": "ten"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            json!({"prompt": "t3", "documents": [{"id": "missing"}]}).to_string(),
            StatusCode::NOT_FOUND,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            json!({"prompt": "t3", "kv_reuse": {"recompute_ratio": 2}}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            json!({"prompt": "t3", "kv_reuse": {"strategy": "magic"}}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            json!({"prompt": "t3", "max_tokens": 100000}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            json!({"prompt": "t3", "model": "gpt-9"}).to_string(),
            StatusCode::NOT_FOUND,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": []}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/nope",
            "{}".into(),
            StatusCode::NOT_FOUND,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            format!("{{\"prompt\": \"{}\"}}", "a".repeat(2 << 20)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
        ),
    ];
    for (uri, body, want, kind) in cases {
        let (status, text) = call(&app, "POST", uri, None, Some(Body::from(body.clone()))).await;
        assert_eq!(
            status,
            want,
            "{uri} {}: {text}",
            &body[..body.len().min(80)]
        );
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert_eq!(v["error"]["type"], kind, "{text}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{text}"
        );
    }
}

#[tokio::test]
async fn ops_endpoints_answer() {
    let app = app(vec![]);
    assert_eq!(
        call(&app, "GET", "/health", None, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", "/ready", None, None).await.0,
        StatusCode::OK
    );
    let (status, models) = call(&app, "GET", "/v1/models", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(models.contains("\"tiny\""));
    post(
        &app,
        "/v1/completions",
        json!({"prompt": "t3", "max_tokens": 2}),
    )
    .await;
    let (_, metrics) = call(&app, "GET", "/metrics", None, None).await;
    for name in [
        "prophetkv_time_to_first_token_seconds_bucket",
        "prophetkv_request_duration_seconds_count",
        "prophetkv_queue_depth",
        "prophetkv_running_sequences",
        "prophetkv_generated_tokens_total",
        "prophetkv_document_cache_hits_total{tier=\"host\"}",
        "prophetkv_document_cache_hits_total{tier=\"device\"} 0",
        "prophetkv_store_used_bytes{tier=\"device\"} 0",
        "prophetkv_store_used_bytes{tier=\"disk\"}",
        "prophetkv_document_cache_misses_total",
        "prophetkv_recompute_ratio_bucket",
        "prophetkv_decode_batch_max",
        "prophetkv_decode_steps_total",
        "prophetkv_http_responses_total{route=\"/v1/completions\",status=\"200\"} 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn registered_documents_are_computed_while_the_engine_is_idle() {
    let app = app(vec![]);
    let reg = json!({"id": "idle", "text": tiny_text(&tokens(40, 9))});
    let (status, created) = post(&app, "/v1/documents", reg).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, text) = call(&app, "GET", "/v1/documents/idle", None, None).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let doc: Value = serde_json::from_str(&text).unwrap();
        if doc["ready"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "t3", "max_tokens": 1, "documents": [{"id": "idle"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["prophetkv"]["cache_hits"]["computed"], 0, "{body}");
    assert_eq!(body["prophetkv"]["cache_hits"]["host"], 1, "{body}");
}

/// The error message and param of a refused request.
fn refusal(status: StatusCode, body: &Value) -> (String, String) {
    assert!(status.is_client_error(), "{status}: {body}");
    (
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["param"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn an_invalid_value_is_refused_with_the_same_message_whichever_route_it_takes() {
    let app = app(vec![]);
    let prompt = tiny_text(&tokens(4, 3));
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": 2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let completion = |extra: Value| {
        let mut body = json!({"prompt": prompt, "max_tokens": 2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        json!({"kv_reuse": {"recompute_ratio": 1.5}}),
        json!({"stop": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}),
        json!({"temperature": 3.0}),
        json!({"documents": [{"text": ""}]}),
    ];
    for extra in cases {
        let (s1, b1) = post(&app, "/v1/completions", completion(extra.clone())).await;
        let (s2, b2) = post(&app, "/v1/chat/completions", chat(extra.clone())).await;
        let via_completions = refusal(s1, &b1);
        assert_eq!(via_completions, refusal(s2, &b2), "{extra}");
        assert_eq!(s1, s2);
        assert!(!via_completions.1.is_empty(), "{extra}: names no field");
    }
    // An empty document is refused alike inline and when registered.
    let (s1, b1) = post(
        &app,
        "/v1/completions",
        completion(json!({"documents": [{"text": ""}]})),
    )
    .await;
    let (s2, b2) = post(&app, "/v1/documents", json!({"documents": [{"text": ""}]})).await;
    assert_eq!(refusal(s1, &b1), refusal(s2, &b2));
    // The ratio is refused by the reuse crate's own check, naming the option.
    let (status, body) = post(
        &app,
        "/v1/completions",
        completion(json!({"kv_reuse": {"recompute_ratio": 1.5}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "kv_reuse.recompute_ratio", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1.5"),
        "{body}"
    );
}

#[tokio::test]
async fn a_failing_disk_tier_is_a_500_naming_the_store_and_a_lost_redis_only_a_miss() {
    let mut redis = RedisServer::start();
    let remote = RemoteConfig {
        url: redis.url.clone(),
        budget: 64 << 20,
        prefix: "pkv-api".into(),
    };
    let tiny = tiny_engine("t5 ", EngineConfig::default(), Some(remote));
    let blobs = tiny.data_dir.path().join("blobs");
    let app = app_on(tiny, vec![], None);
    let request = |seed| json!({"prompt": "t3", "max_tokens": 2, "documents": [{"text": tiny_text(&tokens(20, seed))}]});
    let (status, body) = post(&app, "/v1/completions", request(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Redis gone: a new document is computed and served; the miss is counted.
    redis.stop();
    let (status, body) = post(&app, "/v1/completions", request(2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["prophetkv"]["cache_hits"]["computed"], 1, "{body}");
    let (_, metrics) = call(&app, "GET", "/metrics", None, None).await;
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("prophetkv_store_tier_errors_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(errors > 0.0, "{metrics}");

    // The disk tier's directory replaced by a file: storing a cache fails,
    // and the client is told by whom.
    std::fs::remove_dir_all(&blobs).unwrap();
    std::fs::write(&blobs, b"not a directory").unwrap();
    let (status, body) = post(&app, "/v1/completions", request(3)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("document store: "), "{message}");
    assert!(message.contains("blobs"), "{message}");
    // What memory holds is still served.
    let (status, body) = post(&app, "/v1/completions", request(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_openapi_document_is_openapi_3_and_lists_every_route() {
    let app = app(vec![]);
    let (status, text) = call(&app, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let routes = [
        ("post", "/v1/completions"),
        ("post", "/v1/chat/completions"),
        ("post", "/v1/documents"),
        ("get", "/v1/documents"),
        ("get", "/v1/documents/{id}"),
        ("delete", "/v1/documents/{id}"),
        ("get", "/v1/models"),
        ("get", "/v1/models/{model}"),
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in routes {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    // And every documented operation is routed (not the 404 fallback).
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let uri = path.replace("{id}", "some-id");
            let (status, body) = call(
                &app,
                &method.to_uppercase(),
                &uri,
                None,
                Some(Body::from("{}")),
            )
            .await;
            assert!(
                !body.contains("no route for"),
                "{method} {path}: {status} {body}"
            );
        }
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_clients_own_is_echoed() {
    let app = app(vec![]);
    let send = |id: Option<&str>, uri: &str| {
        let mut req = Request::builder().uri(uri);
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        app.router.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    let res = send(None, "/health").await.unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(generated.starts_with("req-"), "{generated}");
    let res = send(Some("client-42"), "/v1/nope").await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["x-request-id"], "client-42");
    let res = send(Some("has space"), "/health").await.unwrap();
    assert_ne!(res.headers()["x-request-id"], "has space");
}

#[tokio::test]
async fn a_model_is_retrieved_by_id_and_another_is_404() {
    let app = app(vec![]);
    let (status, body) = call(&app, "GET", "/v1/models/tiny", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let card: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(card["id"], "tiny");
    assert_eq!(card["object"], "model");
    let (status, body) = call(&app, "GET", "/v1/models/gpt-4o", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains(r#"\"gpt-4o\" not found"#), "{body}");
}

#[tokio::test]
async fn documents_are_listed_a_page_at_a_time_in_id_order() {
    let app = app(vec![]);
    let docs: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("d{i}"), "text": tiny_text(&tokens(5, 40 + i))}))
        .collect();
    let (status, _) = post(&app, "/v1/documents", json!({"documents": docs})).await;
    assert_eq!(status, StatusCode::CREATED);
    let page = |query: &str| {
        let uri = format!("/v1/documents{query}");
        let app = &app;
        async move {
            let (status, body) = call(app, "GET", &uri, None, None).await;
            (status, serde_json::from_str::<Value>(&body).unwrap())
        }
    };
    let (_, first) = page("?limit=2").await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first), ["d0", "d1"]);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["last_id"], "d1");
    let (_, second) = page("?limit=2&after=d1").await;
    assert_eq!(ids(&second), ["d2", "d3"]);
    let (_, last) = page("?limit=2&after=d3").await;
    assert_eq!(ids(&last), ["d4"]);
    assert_eq!(last["has_more"], false);
    let (_, all) = page("").await;
    assert_eq!(ids(&all).len(), 5);
    let (status, body) = page("?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "limit");
}

/// Every token of a streamed answer's chat `logprobs.content`, in order.
fn streamed_chat_logprobs(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect()
}

#[tokio::test]
async fn logprobs_come_one_per_token_and_a_greedy_token_is_the_most_likely() {
    let app = app(vec![]);
    let (status, body) = post(
        &app,
        "/v1/completions",
        json!({"prompt": tiny_text(&tokens(4, 3)), "max_tokens": 6, "temperature": 0,
               "logprobs": 3, "documents": docs()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let n = body["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    let lp = &body["choices"][0]["logprobs"];
    let chosen = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(chosen.len(), n, "{lp}");
    assert_eq!(lp["tokens"].as_array().unwrap().len(), n);
    for (step, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 3, "{top:?}");
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        let mine = chosen[step].as_f64().unwrap();
        assert!(
            mine <= 0.0 && (mine - best).abs() < 1e-6,
            "step {step}: {mine} vs {best}"
        );
    }
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");

    // Chat, streamed: the entries across chunks, one per token, with two
    // alternatives each, the first the chosen one.
    let body = json!({
        "messages": [{"role": "user", "content": tiny_text(&tokens(4, 4))}],
        "max_tokens": 5, "temperature": 0, "stream": true, "logprobs": true, "top_logprobs": 2,
        "stream_options": {"include_usage": true}
    });
    let (status, text) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        None,
        Some(Body::from(body.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let entries = streamed_chat_logprobs(&text);
    let usage: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|c| c["usage"].is_object())
        .unwrap();
    assert_eq!(
        entries.len() as u64,
        usage["usage"]["completion_tokens"].as_u64().unwrap()
    );
    for e in &entries {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{e}");
        assert_eq!(top[0]["logprob"], e["logprob"], "{e}");
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
        assert_eq!(
            e["bytes"].as_array().unwrap().len(),
            e["token"].as_str().unwrap().len(),
            "{e}"
        );
    }
}

/// The id of the tiny model's token spelled `token` ("t12" is 12).
fn tiny_id(token: &str) -> u32 {
    token.trim().trim_start_matches('t').parse().unwrap()
}

#[tokio::test]
async fn penalties_and_biases_choose_what_their_definition_chooses_on_the_reported_logprobs() {
    let app = app(vec![]);
    let ask = |extra: Value| {
        let mut body = json!({
            "messages": [{"role": "user", "content": tiny_text(&tokens(6, 8))}],
            "max_tokens": 12, "temperature": 0, "logprobs": true, "top_logprobs": 20
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let app = &app;
        async move {
            let (status, body) = post(app, "/v1/chat/completions", body).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["choices"][0]["logprobs"]["content"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    // Penalties: at every step the chosen token has the highest penalised
    // score among the alternatives (log-probabilities are the model's own).
    let (presence, frequency) = (0.7, 1.3);
    let steps = ask(json!({"presence_penalty": presence, "frequency_penalty": frequency})).await;
    let plain = ask(json!({})).await;
    let mut counts = std::collections::HashMap::<String, f64>::new();
    for step in &steps {
        let score = |token: &str, logprob: f64| {
            let c = counts.get(token).copied().unwrap_or(0.0);
            logprob - c * frequency - if c > 0.0 { presence } else { 0.0 }
        };
        let chosen = score(
            step["token"].as_str().unwrap(),
            step["logprob"].as_f64().unwrap(),
        );
        for alt in step["top_logprobs"].as_array().unwrap() {
            let other = score(
                alt["token"].as_str().unwrap(),
                alt["logprob"].as_f64().unwrap(),
            );
            assert!(chosen >= other - 1e-5, "{step}");
        }
        *counts
            .entry(step["token"].as_str().unwrap().to_string())
            .or_default() += 1.0;
    }
    let tokens_of = |steps: &[Value]| -> Vec<String> {
        steps
            .iter()
            .map(|s| s["token"].as_str().unwrap().to_string())
            .collect()
    };
    assert_ne!(
        tokens_of(&steps),
        tokens_of(&plain),
        "the penalties changed nothing"
    );

    // A bias of -100 on the greedy first token hands the first step to the
    // runner-up of the unbiased run; +100 on a token makes it every token.
    let first = plain[0]["token"].as_str().unwrap();
    let runner_up = plain[0]["top_logprobs"][1]["token"].as_str().unwrap();
    let biased = ask(json!({"logit_bias": {tiny_id(first).to_string(): -100}})).await;
    assert_eq!(biased[0]["token"], runner_up);
    let forced = ask(json!({"logit_bias": {"17": 100}, "max_tokens": 4})).await;
    assert_eq!(tokens_of(&forced).len(), 4);
    assert!(
        tokens_of(&forced).iter().all(|t| tiny_id(t) == 17),
        "{forced:?}"
    );
}

#[tokio::test]
async fn every_parameter_not_served_is_refused_naming_it_and_annotations_are_accepted() {
    let app = app(vec![]);
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "t3"}], "max_tokens": 2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let completion = |extra: Value| {
        let mut body = json!({"prompt": "t3", "max_tokens": 2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let refused = [
        ("/v1/chat/completions", chat(json!({"n": 2})), "n"),
        (
            "/v1/chat/completions",
            chat(json!({"tools": [{"type": "retrieval", "function": {"name": "f"}}]})),
            "tools",
        ),
        (
            "/v1/chat/completions",
            chat(
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}),
            ),
            "tools",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"tool_choice": "required"})),
            "tool_choice",
        ),
        (
            "/v1/chat/completions",
            chat(
                json!({"tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            ),
            "tool_choice",
        ),
        (
            "/v1/chat/completions",
            chat(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}}),
            ),
            "response_format",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "f"}}]})),
            "response_format",
        ),
        (
            "/v1/chat/completions",
            chat(
                json!({"messages": [{"role": "user", "content": "t3", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
            ),
            "messages",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"modalities": ["text", "audio"]})),
            "modalities",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"audio": {"voice": "alloy"}})),
            "audio",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"reasoning_effort": "high"})),
            "reasoning_effort",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"store": true})),
            "store",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"service_tier": "flex"})),
            "service_tier",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"top_logprobs": 2})),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"frequency_penalty": 5})),
            "frequency_penalty",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"presence_penalty": -3})),
            "presence_penalty",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"logit_bias": {"abc": 1}})),
            "logit_bias",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"logit_bias": {"99999": 1}})),
            "logit_bias",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"logit_bias": {"3": 101}})),
            "logit_bias",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"temprature": 0.5})),
            "temprature",
        ),
        (
            "/v1/completions",
            completion(json!({"best_of": 3})),
            "best_of",
        ),
        (
            "/v1/completions",
            completion(json!({"suffix": "t9"})),
            "suffix",
        ),
        (
            "/v1/completions",
            completion(json!({"echo": true, "logprobs": 1})),
            "echo",
        ),
        (
            "/v1/completions",
            completion(json!({"logprobs": 6})),
            "logprobs",
        ),
        (
            "/v1/completions",
            completion(json!({"prompt": [[3, 4], [5]]})),
            "prompt",
        ),
        (
            "/v1/completions",
            completion(json!({"prompt": [3, 99999]})),
            "prompt",
        ),
    ];
    for (uri, body, param) in refused {
        let (status, answer) = post(&app, uri, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{body}: {answer}");
    }
    let accepted = [
        (
            "/v1/chat/completions",
            chat(
                json!({"user": "u1", "safety_identifier": "s", "prompt_cache_key": "k",
            "metadata": {"a": "b"}, "service_tier": "auto", "store": false, "parallel_tool_calls": true,
            "tools": [], "tool_choice": "none", "response_format": {"type": "text"}, "modalities": ["text"],
            "seed": -5, "n": 1}),
            ),
        ),
        (
            "/v1/completions",
            completion(json!({"best_of": 1, "suffix": "", "echo": false, "user": "u", "seed": -1})),
        ),
        ("/v1/completions", completion(json!({"prompt": [3, 4, 5]}))),
        (
            "/v1/completions",
            completion(json!({"prompt": [[3, 4, 5]]})),
        ),
    ];
    for (uri, body) in accepted {
        let (status, answer) = post(&app, uri, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
    }
}

#[tokio::test]
async fn echo_puts_the_prompt_before_the_answer_streamed_or_not() {
    let app = app(vec![]);
    let body = json!({"prompt": "t3 t4", "max_tokens": 3, "temperature": 0, "echo": true});
    let (_, echoed) = post(&app, "/v1/completions", body.clone()).await;
    let mut plain = body.clone();
    plain["echo"] = json!(false);
    let (_, answer) = post(&app, "/v1/completions", plain).await;
    let answer = answer["choices"][0]["text"].as_str().unwrap();
    assert_eq!(
        echoed["choices"][0]["text"].as_str().unwrap(),
        format!("t3 t4{answer}")
    );
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let (_, text) = call(
        &app,
        "POST",
        "/v1/completions",
        None,
        Some(Body::from(streamed.to_string())),
    )
    .await;
    let joined: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(joined, format!("t3 t4{answer}"));
}

#[tokio::test]
async fn a_trailing_assistant_message_is_continued_not_answered_anew() {
    let template = "{{ bos_token }}{% for m in messages %}t10 {{ m.content }} t11 {% endfor %}\
                    {% if add_generation_prompt %}t12 {% endif %}";
    let template = ChatTemplate::new(template, "t1", "t63").unwrap();
    let app = app_with(vec![], Some(Arc::new(template)));
    let ask = |messages: Value, max_tokens: usize| {
        let app = &app;
        async move {
            let (status, body) = post(
                app,
                "/v1/chat/completions",
                json!({"messages": messages, "max_tokens": max_tokens, "temperature": 0,
                       "logprobs": true, "kv_reuse": {"strategy": "full"}}),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let tokens: Vec<String> = body["choices"][0]["logprobs"]["content"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["token"].as_str().unwrap().trim().to_string())
                .collect();
            (body, tokens)
        }
    };
    let user = json!({"role": "user", "content": "t3 t4"});
    let (fresh, answer) = ask(json!([user]), 4).await;
    assert_eq!(answer.len(), 4, "{fresh}");
    // Prefilled with the answer's first token, the reply is the rest of it.
    let (continued, rest) = ask(
        json!([user, {"role": "assistant", "content": answer[0]}]),
        3,
    )
    .await;
    assert_eq!(rest, answer[1..], "{continued}");
    assert_eq!(
        continued["usage"]["prompt_tokens"].as_u64().unwrap(),
        fresh["usage"]["prompt_tokens"].as_u64().unwrap() + 1
    );
}

#[tokio::test]
async fn errors_speak_json_not_rust() {
    let app = app(vec![]);
    let cases = [
        ("/v1/completions", json!({"prompt": {"a": 1}})),
        ("/v1/completions", json!({"prompt": "t3", "max_tokens": -1})),
        (
            "/v1/completions",
            json!({"prompt": "t3", "temperature": "hot"}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": 5}]}),
        ),
        ("/v1/chat/completions", json!({"messages": "hi"})),
        ("/v1/documents", json!({"txt": "t3"})),
        ("/v1/completions", json!({"prompt": "t3", "stop": 5})),
    ];
    for (uri, body) in cases {
        let (status, answer) = post(&app, uri, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        for rust in [
            "untagged enum",
            "u64",
            "usize",
            "f32",
            "i64",
            "u32",
            "struct ",
            "OneOrMany",
            "Prompt",
            "Content",
            "RegisterBody",
        ] {
            assert!(!message.contains(rust), "{body}: {message}");
        }
    }
    // 405 has a body; a prompt beyond the context says so in OpenAI's code.
    let (status, text) = call(&app, "GET", "/v1/completions", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let (status, body) = post(
        &app,
        "/v1/completions",
        json!({"prompt": tiny_text(&tokens(1100, 2))}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
}

#[tokio::test]
async fn a_document_no_request_could_hold_is_refused_at_registration_with_its_size() {
    let app = app(vec![]);
    let (status, body) = post(
        &app,
        "/v1/documents",
        json!({"id": "huge", "text": tiny_text(&tokens(1100, 2))}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1100 tokens") && message.contains("1024"),
        "{message}"
    );
    let (status, _) = call(&app, "GET", "/v1/documents/huge", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was kept");
}

#[tokio::test]
async fn tokenize_and_detokenize_round_trip_and_name_bad_ids() {
    let app = app(vec![]);
    let (status, body) = post(&app, "/tokenize", json!({"prompt": "t3 t17 t4"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tokens"], json!([3, 17, 4]));
    assert_eq!(body["count"], 3);
    assert_eq!(body["max_model_len"], 1024);
    let (_, with_bos) = post(
        &app,
        "/tokenize",
        json!({"prompt": "t3", "add_special_tokens": true}),
    )
    .await;
    assert_eq!(with_bos["count"], 2);
    let (status, body) = post(&app, "/detokenize", json!({"tokens": [3, 17, 4]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["prompt"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["t3", "t17", "t4"]
    );
    let (status, body) = post(&app, "/detokenize", json!({"tokens": [99999]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "tokens");
}

/// Every request parameter of OpenAI's API reference (chat completions and
/// completions), with a value that asks for something.
const CHAT_PARAMETERS: [(&str, &str); 36] = [
    ("messages", r#"[{"role": "user", "content": "t3"}]"#),
    ("model", r#""tiny""#),
    ("audio", r#"{"voice": "alloy", "format": "wav"}"#),
    ("frequency_penalty", "0.5"),
    ("function_call", r#""auto""#),
    ("functions", r#"[{"name": "f"}]"#),
    ("logit_bias", r#"{"3": 2}"#),
    ("logprobs", "true"),
    ("max_completion_tokens", "2"),
    ("max_tokens", "2"),
    ("metadata", r#"{"k": "v"}"#),
    ("modalities", r#"["text"]"#),
    ("n", "1"),
    ("parallel_tool_calls", "true"),
    ("prediction", r#"{"type": "content", "content": "t3"}"#),
    ("presence_penalty", "0.5"),
    ("prompt_cache_key", r#""k""#),
    ("reasoning_effort", r#""low""#),
    ("response_format", r#"{"type": "text"}"#),
    ("safety_identifier", r#""s""#),
    ("seed", "-3"),
    ("service_tier", r#""auto""#),
    ("stop", r#"["t9"]"#),
    ("store", "false"),
    ("stream", "false"),
    ("stream_options", r#"{"include_usage": true}"#),
    ("temperature", "0.5"),
    ("tool_choice", r#""none""#),
    (
        "tools",
        r#"[{"type": "function", "function": {"name": "f"}}]"#,
    ),
    ("top_logprobs", "2"),
    ("top_p", "0.9"),
    ("user", r#""u""#),
    ("verbosity", r#""low""#),
    ("web_search_options", "{}"),
    ("documents", r#"[{"text": "t4 t5"}]"#),
    ("kv_reuse", r#"{"strategy": "full"}"#),
];

const COMPLETION_PARAMETERS: [(&str, &str); 18] = [
    ("model", r#""tiny""#),
    ("prompt", r#""t3""#),
    ("best_of", "1"),
    ("echo", "true"),
    ("frequency_penalty", "0.5"),
    ("logit_bias", r#"{"3": 2}"#),
    ("logprobs", "2"),
    ("max_tokens", "2"),
    ("n", "1"),
    ("presence_penalty", "0.5"),
    ("seed", "7"),
    ("stop", r#""t9""#),
    ("stream", "false"),
    ("stream_options", r#"{"include_usage": true}"#),
    ("suffix", r#""""#),
    ("temperature", "0.5"),
    ("top_p", "0.9"),
    ("user", r#""u""#),
];

#[tokio::test]
async fn every_parameter_of_the_reference_is_honoured_or_refused_by_name_and_in_the_readme() {
    let app = app(vec![]);
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let table = &readme[readme.find("### OpenAI parameters").unwrap()..];
    for (uri, base, parameters) in [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "t3"}], "max_tokens": 2}),
            &CHAT_PARAMETERS[..],
        ),
        (
            "/v1/completions",
            json!({"prompt": "t3", "max_tokens": 2}),
            &COMPLETION_PARAMETERS[..],
        ),
    ] {
        for (name, value) in parameters {
            assert!(
                table.contains(&format!("`{name}`")),
                "{name} is not in README's table"
            );
            let mut body = base.clone();
            body[*name] = serde_json::from_str(value).unwrap();
            if *name == "top_logprobs" {
                body["logprobs"] = json!(true);
            }
            let (status, answer) = post(&app, uri, body.clone()).await;
            match status {
                StatusCode::OK => {}
                StatusCode::BAD_REQUEST => assert_eq!(answer["error"]["param"], *name, "{body}"),
                other => panic!("{name}: {other} {answer}"),
            }
        }
    }
}

#[tokio::test]
async fn explain_lists_every_context_token_once_with_the_stats_recomputed_count() {
    let app = app(vec![]);
    let (status, body) = post(
        &app,
        "/v1/completions",
        json!({
            "prompt": tiny_text(&tokens(4, 3)), "max_tokens": 2, "temperature": 0,
            "documents": docs(), "kv_reuse": {"strategy": "prophetkv", "recompute_ratio": 0.5},
            "prophetkv": {"explain": true}
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats = &body["prophetkv"];
    let explain = &stats["explain"];
    let tokens = explain["tokens"].as_array().unwrap();
    assert_eq!(
        tokens.len() as u64,
        stats["context_tokens"].as_u64().unwrap()
    );
    let recomputed_documents = tokens
        .iter()
        .filter(|t| t["segment"] == "document" && t["recomputed"] == "all_layers")
        .count();
    assert_eq!(
        recomputed_documents as u64,
        stats["selected_tokens"].as_u64().unwrap()
    );
    let scored: Vec<f64> = tokens.iter().filter_map(|t| t["score"].as_f64()).collect();
    assert_eq!(
        scored.len() as u64,
        stats["eligible_tokens"].as_u64().unwrap()
    );
    assert!(scored.iter().all(|s| s.is_finite()));
    assert!(tokens
        .iter()
        .filter(|t| t["segment"] == "query")
        .all(|t| t["recomputed"] == "all_layers"));
    let shares: f64 = explain["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["budget_share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");
    // Without the option, no explanation.
    let (_, plain) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "t3", "max_tokens": 1}),
    )
    .await;
    assert!(plain["prophetkv"].get("explain").is_none());
}

#[tokio::test]
async fn twenty_registered_documents_become_ready_without_a_request_while_one_is_answered() {
    let app = app(vec![]);
    let documents: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("bg-{i:02}"), "text": tiny_text(&tokens(60, 100 + i))}))
        .collect();
    let (status, created) = post(&app, "/v1/documents", json!({ "documents": documents })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let statuses: Vec<&str> = created["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == "pending" || *s == "ready"),
        "{statuses:?}"
    );
    // A completion sent meanwhile is answered.
    let (status, body) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "t3", "max_tokens": 2, "documents": [{"text": tiny_text(&tokens(30, 7))}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, text) = call(&app, "GET", "/v1/documents?limit=100", None, None).await;
        let list: Value = serde_json::from_str(&text).unwrap();
        let data = list["data"].as_array().unwrap();
        assert_eq!(data.len(), 20);
        if data
            .iter()
            .all(|d| d["status"] == "ready" && d["ready"] == true)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all ready: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, one) = call(&app, "GET", "/v1/documents/bg-07", None, None).await;
    assert!(one.contains("\"status\":\"ready\""), "{one}");
}

#[tokio::test]
async fn a_malformed_query_or_path_is_a_json_400_naming_it() {
    let app = app(vec![]);
    for uri in [
        "/v1/documents?limit=-1",
        "/v1/documents/%FF",
        "/v1/models/%C0",
    ] {
        let (status, text) = call(&app, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{uri}: {text}"));
        assert_eq!(body["error"]["type"], "invalid_request_error", "{uri}");
    }
    let (_, text) = call(&app, "GET", "/v1/documents?limit=-1", None, None).await;
    assert!(text.contains("limit"), "{text}");
}

#[tokio::test]
async fn an_output_the_models_vocabulary_cannot_spell_is_a_400_naming_the_field() {
    // The tiny vocabulary has no `{`: no JSON object can start.
    let app = app(vec![]);
    let (status, body) = post(
        &app,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "t3"}], "response_format": {"type": "json_object"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "response_format");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("vocabulary") && !message.contains('\n'),
        "{message}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_streams_event_by_event_and_metadata_as_any_json() {
    let app = app(vec![]);
    let (_, text) = call(&app, "GET", "/openapi.json", None, None).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let ok = &doc["paths"][path]["post"]["responses"]["200"]["content"];
        assert!(ok["application/json"]["schema"].is_object(), "{path}");
        let data = &ok["text/event-stream"]["schema"]["properties"]["data"]["anyOf"];
        assert_eq!(data[0]["enum"][0], "[DONE]", "{path}: {data}");
        assert_eq!(data[1]["contentMediaType"], "application/json", "{path}");
        let examples =
            &doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"];
        assert!(
            examples.as_object().is_some_and(|e| !e.is_empty()),
            "{path}"
        );
    }
    let metadata = &doc["components"]["schemas"]["Document"]["properties"]["metadata"];
    assert!(metadata.get("type").is_none(), "{metadata}");
}

#[tokio::test]
async fn every_request_example_of_the_openapi_document_is_answered() {
    let app = app(vec![]);
    let (_, text) = call(&app, "GET", "/openapi.json", None, None).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut answered = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(content) = item["post"]["requestBody"]["content"]["application/json"].as_object()
        else {
            continue;
        };
        let examples = content
            .get("examples")
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        let values = examples
            .map(|(_, e)| e["value"].clone())
            .chain(content.get("example").cloned());
        for example in values {
            if example.get("response_format").is_some() {
                // The tiny vocabulary cannot spell JSON (the test above).
                continue;
            }
            let (status, body) = post(&app, path, example.clone()).await;
            assert!(status.is_success(), "{path} {example}: {status} {body}");
            answered += 1;
        }
    }
    assert!(answered >= 10, "{answered} examples");
}
