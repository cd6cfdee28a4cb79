//! Every error answer has the documented JSON shape, whoever produced it
//! (a handler, an extractor, the router's 405, the body limit), its details
//! are bounded, NUL characters in paths, queries and report strings are a
//! clear `400` on both backends, the bearer scheme is case-insensitive, and
//! invented HTTP methods cannot add series to the host's own metrics.

use vigil_tests::{
    backend_tests, expect_error, gauge, parse_exposition, report, unique, Backend, MetricItem,
    TestDatabase, TestServer, Value,
};

async fn error_answers_are_always_json(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let client = server.client();

    // A body over --max-body-bytes (16 MiB) on a route that takes JSON.
    let big = vec![b' '; 64 * 1024 * 1024];
    let resp = client
        .post(server.url("/api/v2/components"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("big POST");
    expect_error(resp, 413, "payload_too_large").await;

    // A client that writes its whole oversized body before it reads (as
    // many do) still gets the answer, not a broken pipe: the server reads
    // and discards the body before it answers and closes.
    let addr = server.addr();
    let (written, answer) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(addr).expect("connect");
        let total = 64 * 1024 * 1024;
        write!(
            conn,
            "POST /api/v2/components HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
        )
        .expect("headers");
        let chunk = vec![b' '; 1024 * 1024];
        let mut written = 0;
        while written < total {
            match conn.write_all(&chunk) {
                Ok(()) => written += chunk.len(),
                Err(_) => break,
            }
        }
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        (written, answer)
    })
    .await
    .expect("raw client");
    assert_eq!(written, 64 * 1024 * 1024, "the server cut the upload short");
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("payload_too_large"),
        "{answer}"
    );

    // Methods a route does not have: 405 with Allow, as JSON.
    for (method, path) in [
        (reqwest::Method::PUT, "/api/v2/health"),
        (reqwest::Method::DELETE, "/api/metrics/report"),
        (reqwest::Method::PATCH, "/api/v2/events"),
    ] {
        let resp = client
            .request(method.clone(), server.url(path))
            .send()
            .await
            .expect("request");
        assert!(
            resp.headers().contains_key("allow"),
            "{method} {path}: no Allow header"
        );
        let error = expect_error(resp, 405, "method_not_allowed").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap_or("")
                .contains(method.as_str()),
            "{error}"
        );
    }

    // A path segment that is not UTF-8.
    let resp = client
        .post(server.url("/api/v2/components/%FF/heartbeat"))
        .send()
        .await
        .expect("request");
    expect_error(resp, 400, "invalid_request").await;

    // Unknown routes and malformed JSON keep their codes.
    expect_error(server.get("/api/v2/nothing-here").await, 404, "not_found").await;
    expect_error(
        server.post_raw("/api/v2/components", "{not json").await,
        400,
        "malformed_json",
    )
    .await;
}

async fn error_details_are_capped_at_one_hundred_with_a_count(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let long = "x".repeat(600);
    let mut item = gauge("m", 1.0);
    for i in 0..10_000 {
        item = item.label(&format!("bad-{i}-{long}"), "v");
    }
    let body = report(&unique("c"), [item]);
    let resp = server.report(&body).await;
    let text = resp.text().await.expect("body");
    assert!(
        text.len() < 200_000,
        "the error answer is {} bytes long",
        text.len()
    );
    let json: Value = serde_json::from_str(&text).expect("JSON error");
    let details = json["error"]["details"].as_array().expect("details");
    assert_eq!(details.len(), 100, "{}", &text[..500]);
    assert!(
        json["error"]["details_total"].as_u64().unwrap_or(0) > 100,
        "{}",
        &text[..300]
    );
    for d in details {
        assert!(d["reason"].as_str().unwrap_or("").len() <= 512);
        assert!(d["field"].as_str().unwrap_or("").len() <= 512);
    }
}

async fn nul_characters_are_refused_with_a_400_naming_the_field(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let c = unique("nul");
    for (field, item, body_patch) in [
        (
            "labels.host",
            gauge("m", 1.0).label("host", "a\u{0}b"),
            None,
        ),
        ("help_text", gauge("m", 1.0).help("help\u{0}"), None),
        (
            "component_name",
            gauge("m", 1.0),
            Some(("component_name", "a\u{0}b")),
        ),
        (
            "component_type",
            gauge("m", 1.0),
            Some(("component_type", "t\u{0}")),
        ),
    ] {
        let mut body = report(&c, [item as MetricItem]);
        if let Some((key, value)) = body_patch {
            body[key] = Value::String(value.into());
        }
        let error = expect_error(server.report(&body).await, 400, "invalid_report").await;
        let fields: Vec<&str> = error["details"]
            .as_array()
            .map(|d| d.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(fields.contains(&field), "{field}: {error}");
    }
    // Nothing was stored.
    let page = server.query_page(&[]).await;
    assert_eq!(page["samples"].as_array().map(Vec::len), Some(0), "{page}");

    for path in [
        "/api/metrics/query?component_name=a%00b",
        "/api/v2/metrics/query?metric_name=%00",
        "/api/v2/events?session_id=s%00",
        "/api/v2/events?task_id=%00t",
        "/api/v2/events?workflow_id=w%00",
    ] {
        expect_error(server.get(path).await, 400, "invalid_query").await;
    }
    expect_error(
        server
            .delete("/api/v2/metrics/series?component=a%00b")
            .await,
        400,
        "invalid_query",
    )
    .await;
    expect_error(
        server
            .post_json("/api/v2/components/a%00b/heartbeat", &Value::Null)
            .await,
        400,
        "invalid_request",
    )
    .await;
}

backend_tests!(
    error_answers_are_always_json,
    error_details_are_capped_at_one_hundred_with_a_count,
    nul_characters_are_refused_with_a_400_naming_the_field
);

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::builder(&db)
        .token("read,write:s3cret-token")
        .start()
        .await;
    let client = server.client();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let resp = client
            .get(server.url("/api/v2/components"))
            .header("authorization", format!("{scheme} s3cret-token"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "scheme {scheme}");
    }
    let resp = client
        .get(server.url("/api/v2/components"))
        .header("authorization", "Basic s3cret-token")
        .send()
        .await
        .expect("request");
    expect_error(resp, 401, "unauthorized").await;
}

#[tokio::test]
async fn invented_http_methods_fold_into_one_metric_label() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let client = server.client();
    for i in 0..50 {
        let method =
            reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).expect("method");
        let _ = client
            .request(method, server.url(&format!("/api/v2/no-such-route-{i}")))
            .send()
            .await
            .expect("request");
    }
    let text = server
        .get("/api/v2/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    let methods: std::collections::BTreeSet<String> = parse_exposition(&text)
        .into_iter()
        .filter(|s| s.name == "vigil_http_requests_total")
        .filter_map(|s| s.labels.get("method").cloned())
        .collect();
    assert!(methods.contains("other"), "{methods:?}");
    assert!(
        methods.iter().all(|m| !m.starts_with("INVENTED")),
        "invented methods became label values: {methods:?}"
    );
    let routes: std::collections::BTreeSet<String> = parse_exposition(&text)
        .into_iter()
        .filter(|s| s.name == "vigil_http_requests_total")
        .filter_map(|s| s.labels.get("route").cloned())
        .collect();
    assert!(
        routes.iter().all(|r| !r.contains("no-such-route")),
        "unmatched paths became label values: {routes:?}"
    );
}
