//! Notification channels through the real server and the real notifier
//! plugins: bodies and configs checked against the plugin's schema (nothing
//! stored on a bad one), secrets write-only (never in an answer nor in the
//! logs, kept across updates), the test endpoint answering with the
//! receiver's outcome (200 with the receipt, the receiver's 4xx, 502, 504)
//! and recording each attempt as a delivery; a notifier built against
//! `vigil:plugin@0.1.0` still receives every alert.

use std::time::Duration;

use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "s3cret-token-9f2b";

async fn serving(server: &TestServer, name: &str) -> Value {
    server
        .wait_plugin(name, WAIT, "loaded", |p| p["state"] == "loaded")
        .await
}

async fn patch(server: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    server
        .client()
        .patch(server.url(path))
        .json(body)
        .send()
        .await
        .expect("patch")
}

async fn create(server: &TestServer, body: Value) -> Value {
    let (status, json) = status_json(
        server
            .post_json("/api/v2/notification-channels", &body)
            .await,
    )
    .await;
    assert_eq!(status, 201, "{json:#}");
    json
}

async fn deliveries(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, json) = status_json(
        server
            .get(&format!("/api/v2/alert-deliveries?{query}"))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{json:#}");
    json["deliveries"].as_array().expect("deliveries").clone()
}

fn manifest(receiver: &WebhookReceiver) -> String {
    format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\ncall_timeout_ms = 3000\n",
        receiver.origin()
    )
}

async fn channels_are_checked_and_secrets_stay_write_only(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    dir.install_with_manifest("webhook", "webhook-notifier", &manifest(&receiver));
    dir.install("noop", "noop-publisher");
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    serving(&server, "webhook").await;
    serving(&server, "noop").await;
    let path = "/api/v2/notification-channels";

    // Bad bodies: each answers 400 naming the field, and stores nothing.
    let bad: Vec<(Value, &str)> = vec![
        (
            json!({"plugin": "webhook", "config": {"url": receiver.url("/hook")}}),
            "name",
        ),
        (json!({"name": "ops", "config": {}}), "plugin"),
        (json!({"name": "ops", "plugin": "nosuch"}), "plugin"),
        (json!({"name": "ops", "plugin": "noop"}), "plugin"),
        (
            json!({"name": "ops", "plugin": "webhook", "config": {}}),
            "config.url",
        ),
        (
            json!({"name": "ops", "plugin": "webhook", "config": {"url": "ftp://x"}}),
            "config.url",
        ),
        (
            json!({"name": "ops", "plugin": "webhook", "config": {"url": receiver.url("/hook"), "colour": "red"}}),
            "config.colour",
        ),
        (json!({"name": "has space", "plugin": "webhook"}), "name"),
        (
            json!({"name": "ops", "plugin": "webhook", "enabled": "yes"}),
            "enabled",
        ),
        (
            json!({"name": "ops", "plugin": "webhook", "id": "mine"}),
            "id",
        ),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (body, field) in bad {
        let err = expect_error(server.post_json(path, &body).await, 400, "invalid_request").await;
        let fields: Vec<&str> = err["details"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(fields.contains(&field), "{body}: {err:#}");
    }
    expect_error(
        server.post_raw(path, "{not json").await,
        400,
        "malformed_json",
    )
    .await;
    let (_, listed) = status_json(server.get(path).await).await;
    assert_eq!(
        listed["channels"],
        json!([]),
        "a refused body stored something"
    );

    // A good one: the secret is accepted and never shown.
    let created = create(
        &server,
        json!({"name": "ops", "plugin": "webhook", "send_resolved": false,
               "config": {"url": receiver.url("/hook"), "bearer_token": SECRET}}),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["config"], json!({"url": receiver.url("/hook")}));
    assert_eq!(created["secrets_set"], json!(["bearer_token"]));
    assert_eq!(created["send_resolved"], false);
    assert_eq!(created["enabled"], true);
    expect_error(
        server
            .post_json(
                path,
                &json!({"name": "ops", "plugin": "webhook", "config": {"url": receiver.url("/x")}}),
            )
            .await,
        409,
        "already_exists",
    )
    .await;

    // An update that leaves the secret out keeps it: the test sends it.
    let updated = patch(
        &server,
        &format!("{path}/{id}"),
        &json!({"config": {"url": receiver.url("/hook2")}, "enabled": false}),
    )
    .await;
    let (status, updated) = status_json(updated).await;
    assert_eq!(status, 200, "{updated:#}");
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["secrets_set"], json!(["bearer_token"]));
    let (status, tested) = status_json(
        server
            .post_json(&format!("{path}/{id}/test"), &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{tested:#}");
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/hook2");
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    // A bad update changes nothing.
    let (status, _) = status_json(
        patch(
            &server,
            &format!("{path}/{id}"),
            &json!({"config": {"url": null}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let (_, read) = status_json(server.get(&format!("{path}/{id}")).await).await;
    assert_eq!(read["config"]["url"], receiver.url("/hook2"));

    // Nowhere in answers or logs.
    for answer in [
        server.get(path).await.text().await.unwrap_or_default(),
        server
            .get(&format!("{path}/{id}"))
            .await
            .text()
            .await
            .unwrap_or_default(),
        server
            .get("/api/v2/alert-deliveries")
            .await
            .text()
            .await
            .unwrap_or_default(),
        server
            .get("/api/v2/plugins")
            .await
            .text()
            .await
            .unwrap_or_default(),
    ] {
        assert!(!answer.contains(SECRET), "secret in an answer: {answer}");
    }
    assert!(
        !server.logs().iter().any(|l| l.contains(SECRET)),
        "secret in the logs"
    );

    // Unknown ids, then delete.
    expect_error(server.get(&format!("{path}/nope")).await, 404, "not_found").await;
    expect_error(
        server
            .post_json(&format!("{path}/{}/test", uuid_like()), &json!({}))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(server.delete(&format!("{path}/{id}")).await.status(), 204);
    expect_error(server.get(&format!("{path}/{id}")).await, 404, "not_found").await;
    expect_error(
        server.delete(&format!("{path}/{id}")).await,
        404,
        "not_found",
    )
    .await;
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".to_string()
}

async fn the_test_endpoint_answers_with_the_receivers_outcome(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    dir.install_with_manifest("webhook", "webhook-notifier", &manifest(&receiver));
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    serving(&server, "webhook").await;
    let channel = create(
        &server,
        json!({"name": "hook", "plugin": "webhook",
               "config": {"url": receiver.url("/alerts"), "timeout_ms": 500}}),
    )
    .await;
    let id = channel["id"].as_str().expect("id").to_string();
    let test = format!("/api/v2/notification-channels/{id}/test");
    receiver.set_handler(|_, i| match i {
        0 => Reply::ok(),
        1 => Reply::status(404).json(&json!({"error": "no such hook"})),
        2 => Reply::status(503),
        _ => Reply::ok().delay(Duration::from_secs(3)),
    });

    // 200: delivered, with the receiver's receipt.
    let (status, ok) = status_json(server.post_json(&test, &json!({})).await).await;
    assert_eq!(status, 200, "{ok:#}");
    assert_eq!(ok["status"], "sent");
    assert_eq!(ok["response_status"], 200);
    assert_eq!(ok["receipt"]["detail"], "HTTP 200");
    // The payload is Alertmanager's webhook payload, version 4.
    let body = receiver.requests()[0].json();
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "alerts",
            "commonAnnotations",
            "commonLabels",
            "externalURL",
            "groupKey",
            "groupLabels",
            "receiver",
            "status",
            "truncatedAlerts",
            "version"
        ]
    );
    assert_eq!(body["version"], "4");
    assert_eq!(body["receiver"], "hook");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["truncatedAlerts"], 0);
    let alert = &body["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "VigilTestNotification");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    let fp = alert["fingerprint"].as_str().expect("fingerprint");
    assert!(
        fp.len() == 16 && fp.chars().all(|c| c.is_ascii_hexdigit()),
        "{fp}"
    );
    assert_eq!(body["commonLabels"], alert["labels"]);

    // The receiver's 4xx, with its reason.
    let (status, refused) = status_json(server.post_json(&test, &json!({})).await).await;
    assert_eq!(status, 404, "{refused:#}");
    assert_eq!(refused["error"]["code"], "receiver_rejected");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no such hook"),
        "{refused:#}"
    );
    // A 5xx is a bad gateway.
    let (status, failed) = status_json(server.post_json(&test, &json!({})).await).await;
    assert_eq!(status, 502, "{failed:#}");
    assert_eq!(failed["response_status"], 503);
    // No answer in time: 504.
    let (status, late) = status_json(server.post_json(&test, &json!({})).await).await;
    assert_eq!(status, 504, "{late:#}");
    assert_eq!(late["error"]["code"], "receiver_timeout");

    // Each attempt is a delivery, newest first.
    let all = deliveries(&server, &format!("channel={id}")).await;
    let summary: Vec<(String, Value)> = all
        .iter()
        .map(|d| {
            (
                d["status"].as_str().unwrap_or("").to_string(),
                d["response_status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("failed".to_string(), Value::Null),
            ("failed".to_string(), json!(503)),
            ("failed".to_string(), json!(404)),
            ("sent".to_string(), json!(200)),
        ]
    );
    for d in &all {
        assert_eq!(d["kind"], "test");
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["payload"]["receiver"], "hook");
    }
    assert_eq!(deliveries(&server, "status=sent").await.len(), 1);
    // And counted in the host's own metrics.
    let own = server
        .get("/api/v2/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    let count = |outcome: &str| {
        expo_value(
            &own,
            "vigil_alert_notifications_total",
            &[("channel", "hook"), ("outcome", outcome)],
        )
    };
    assert_eq!((count("sent"), count("failed")), (1.0, 3.0), "{own}");
    let page = deliveries(&server, "limit=2").await;
    assert_eq!(page.len(), 2);
    for bad in ["status=lost", "limit=0", "cursor=x", "colour=red"] {
        expect_error(
            server.get(&format!("/api/v2/alert-deliveries?{bad}")).await,
            400,
            "invalid_query",
        )
        .await;
    }
}

async fn a_notifier_built_against_0_1_0_still_receives_every_alert(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    dir.install("echo", "echo-notifier");
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    let plugin = serving(&server, "echo").await;
    assert_eq!(plugin["world_version"], "0.1.0", "{plugin:#}");
    let channel = create(&server, json!({"name": "old", "plugin": "echo"})).await;
    let id = channel["id"].as_str().expect("id");
    let (status, ok) = status_json(
        server
            .post_json(
                &format!("/api/v2/notification-channels/{id}/test"),
                &json!({}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200, "{ok:#}");
    let delivery = &ok["delivery"];
    let fingerprint = delivery["alerts"][0]["fingerprint"]
        .as_str()
        .expect("fingerprint");
    // The 0.1.0 plugin got the alert as its own record: id, rule, status.
    assert_eq!(ok["receipt"]["id"], fingerprint);
    assert_eq!(ok["receipt"]["detail"], "VigilTestNotification firing");

    // Its refusal comes back as a permanent failure.
    let (status, _) = status_json(
        patch(
            &server,
            &format!("/api/v2/notification-channels/{id}"),
            &json!({"config": {"fail": "permanent"}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let (status, refused) = status_json(
        server
            .post_json(
                &format!("/api/v2/notification-channels/{id}/test"),
                &json!({}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 502, "{refused:#}");
    assert_eq!(
        refused["error"]["message"],
        format!("refused {fingerprint}")
    );
    assert_eq!(refused["delivery"]["status"], "failed");
}

backend_tests!(
    channels_are_checked_and_secrets_stay_write_only,
    the_test_endpoint_answers_with_the_receivers_outcome,
    a_notifier_built_against_0_1_0_still_receives_every_alert,
);

/// The JSON type of a value, for comparing shapes.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn keys_and_kinds(v: &Value) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = v
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), kind(v))).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The webhook-notifier's payload against what a real Alertmanager sends a
/// webhook for the same alert: same keys and types everywhere, same values
/// except times and ids (`groupKey`, `externalURL`, `startsAt`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_payload_is_what_a_real_alertmanager_sends() {
    let receiver = WebhookReceiver::start().await;
    let Some(am) = AlertmanagerServer::start("hook", &receiver.url("/am"), &["alertname"]).await
    else {
        return;
    };
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install_with_manifest("webhook", "webhook-notifier", &manifest(&receiver));
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    serving(&server, "webhook").await;
    let channel = create(
        &server,
        json!({"name": "hook", "plugin": "webhook", "config": {"url": receiver.url("/vigil")}}),
    )
    .await;
    let id = channel["id"].as_str().expect("id");
    let (status, ok) = status_json(
        server
            .post_json(
                &format!("/api/v2/notification-channels/{id}/test"),
                &json!({}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200, "{ok:#}");
    let ours = receiver.requests()[0].json();
    let our_alert = &ours["alerts"][0];

    // The same alert, as Prometheus would post it to Alertmanager.
    am.post_alerts(&json!([{
        "labels": our_alert["labels"],
        "annotations": our_alert["annotations"],
        "startsAt": our_alert["startsAt"],
        "generatorURL": our_alert["generatorURL"],
    }]))
    .await;
    let theirs = poll_until(
        Duration::from_secs(30),
        "Alertmanager's webhook call",
        || {
            let got = receiver.requests();
            async move { got.into_iter().find(|r| r.path == "/am").map(|r| r.json()) }
        },
    )
    .await;
    let their_alert = &theirs["alerts"][0];

    assert_eq!(
        keys_and_kinds(&ours),
        keys_and_kinds(&theirs),
        "ours {ours:#}\ntheirs {theirs:#}"
    );
    assert_eq!(
        keys_and_kinds(our_alert),
        keys_and_kinds(their_alert),
        "ours {ours:#}\ntheirs {theirs:#}"
    );
    for key in [
        "receiver",
        "status",
        "version",
        "truncatedAlerts",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
    ] {
        assert_eq!(
            ours[key], theirs[key],
            "{key}: ours {ours:#}\ntheirs {theirs:#}"
        );
    }
    for key in [
        "status",
        "labels",
        "annotations",
        "endsAt",
        "generatorURL",
        "fingerprint",
    ] {
        assert_eq!(our_alert[key], their_alert[key], "alerts[0].{key}");
    }
    assert_eq!(ours["alerts"].as_array().map(Vec::len), Some(1));
    assert_eq!(theirs["alerts"].as_array().map(Vec::len), Some(1));
    // Alertmanager holds the alert with the same fingerprint.
    let held = am.alerts().await;
    assert_eq!(held[0]["fingerprint"], our_alert["fingerprint"], "{held:?}");
}
