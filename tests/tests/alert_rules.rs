//! Alert rules through the real server, the real webhook notifier plugin and
//! a strict local receiver: bodies checked field by field (nothing stored on
//! a bad one, a bad expression answered with the parser's message); a
//! threshold crossing goes pending, then firing, is delivered as
//! Alertmanager's webhook payload, and resolves exactly once; `for` holds a
//! short spike back; several series go out grouped in one notification; a
//! receiver that times out, then answers `500`, then recovers gets the
//! notification retried until it is sent once; the state
//! survives a restart without a second send. PromQL parity with a real
//! Prometheus over the same samples is in `promql_parity.rs`.

use std::time::Duration;

use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(60);

fn manifest(receiver: &WebhookReceiver) -> String {
    format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\ncall_timeout_ms = 3000\n",
        receiver.origin()
    )
}

/// A server with the webhook notifier and a channel `ops` posting to `receiver`.
async fn server_with_channel(
    db: &TestDatabase,
    dir: &PluginDir,
    receiver: &WebhookReceiver,
) -> TestServer {
    server_with_channel_config(db, dir, receiver, json!({})).await
}

/// As [`server_with_channel`], with more of the notifier's config in `extra`.
async fn server_with_channel_config(
    db: &TestDatabase,
    dir: &PluginDir,
    receiver: &WebhookReceiver,
    extra: Value,
) -> TestServer {
    let mut config = json!({"url": receiver.url("/hook")});
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    dir.install_with_manifest("webhook", "webhook-notifier", &manifest(receiver));
    let server = TestServer::builder(db).plugin_dir(dir.path()).start().await;
    server
        .wait_plugin("webhook", WAIT, "loaded", |p| p["state"] == "loaded")
        .await;
    let (status, json) = status_json(
        server
            .post_json(
                "/api/v2/notification-channels",
                &json!({"name": "ops", "plugin": "webhook",
                        "config": config}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201, "{json:#}");
    server
}

async fn create_rule(server: &TestServer, body: Value) -> String {
    let (status, json) = status_json(server.post_json("/api/v2/alert-rules", &body).await).await;
    assert_eq!(status, 201, "{json:#}");
    json["id"].as_str().expect("id").to_string()
}

async fn alerts(server: &TestServer) -> Vec<Value> {
    let (status, json) = status_json(server.get("/api/v2/alerts").await).await;
    assert_eq!(status, 200, "{json:#}");
    json["alerts"].as_array().expect("alerts").clone()
}

async fn wait_state(server: &TestServer, component: &str, state: &str) -> Value {
    poll_until(WAIT, &format!("{component} {state}"), || async {
        alerts(server)
            .await
            .into_iter()
            .find(|a| a["labels"]["component"] == component && a["state"] == state)
    })
    .await
}

async fn wait_requests(receiver: &WebhookReceiver, n: usize) -> Vec<Value> {
    poll_until(WAIT, &format!("{n} notification(s)"), || async {
        let r = receiver.requests();
        (r.len() >= n).then(|| r.iter().map(|q| q.json()).collect::<Vec<Value>>())
    })
    .await
}

async fn report_depth(server: &TestServer, component: &str, v: f64) {
    server
        .report_ok(&report(component, [gauge("queue_depth", v)]))
        .await;
}

async fn rules_are_checked_field_by_field(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    let server = server_with_channel(&db, &dir, &receiver).await;
    let path = "/api/v2/alert-rules";
    let bad: Vec<(Value, &str, &str)> = vec![
        (json!({"expr": "up == 0"}), "name", "required"),
        (json!({"name": "a"}), "expr", "required"),
        (json!({"name": "a", "expr": "rate(x[5m]"}), "expr", ""),
        (json!({"name": "a", "expr": "1 + 1"}), "expr", "vector"),
        (
            json!({"name": "a", "expr": "histogram_quantile(0.9, x)"}),
            "expr",
            "histogram_quantile",
        ),
        (
            json!({"name": "a", "expr": "x > 1", "for": "soon"}),
            "for",
            "duration",
        ),
        (
            json!({"name": "a", "expr": "x > 1", "channels": ["nowhere"]}),
            "channels[0]",
            "nowhere",
        ),
        (
            json!({"name": "a", "expr": "x > 1", "labels": {"alertname": "b"}}),
            "labels.alertname",
            "",
        ),
        (
            json!({"name": "a", "expr": "x > 1", "annotations": {"s": "{{ .Foo }}"}}),
            "annotations.s",
            "not supported",
        ),
        (
            json!({"name": "a", "expr": "x > 1", "labels": {"v": "a\u{0}b"}}),
            "labels.v",
            "NUL",
        ),
        (
            json!({"name": "a", "expr": "x > 1", "colour": "red"}),
            "colour",
            "unknown",
        ),
        (
            json!({"name": "a", "expr": "x > 1", "id": "mine"}),
            "id",
            "server",
        ),
        (json!([1, 2]), "body", "object"),
    ];
    for (body, field, says) in bad {
        let err = expect_error(server.post_json(path, &body).await, 400, "invalid_request").await;
        let detail = err["details"]
            .as_array()
            .and_then(|d| d.iter().find(|x| x["field"] == field))
            .unwrap_or_else(|| panic!("{body}: no detail for {field}: {err:#}"));
        assert!(
            detail["reason"].as_str().unwrap_or("").contains(says),
            "{body}: {detail}"
        );
    }
    expect_error(server.post_raw(path, "{nope").await, 400, "malformed_json").await;
    let (_, listed) = status_json(server.get(path).await).await;
    assert_eq!(
        listed["rules"],
        json!([]),
        "a refused body stored something"
    );

    let id = create_rule(
        &server,
        json!({"name": "QueueHigh", "expr": "queue_depth > 100", "for": "90s", "channels": ["ops"]}),
    )
    .await;
    expect_error(
        server
            .post_json(path, &json!({"name": "QueueHigh", "expr": "up == 0"}))
            .await,
        409,
        "already_exists",
    )
    .await;
    let (status, rule) = status_json(server.get(&format!("{path}/{id}")).await).await;
    assert_eq!(status, 200);
    assert_eq!(rule["for"], "1m30s");
    assert_eq!(rule["group_wait"], "30s");
    assert_eq!(rule["channels"].as_array().map(|c| c.len()), Some(1));
    // An update keeps what it leaves out; a bad one changes nothing.
    let resp = server
        .client()
        .patch(server.url(&format!("{path}/{id}")))
        .json(&json!({"for": "2m", "expr": "queue_depth > 200"}))
        .send()
        .await
        .expect("patch");
    let (status, rule) = status_json(resp).await;
    assert_eq!(status, 200, "{rule:#}");
    assert_eq!(
        (rule["for"].as_str(), rule["expr"].as_str()),
        (Some("2m"), Some("queue_depth > 200"))
    );
    let resp = server
        .client()
        .patch(server.url(&format!("{path}/{id}")))
        .json(&json!({"expr": "sum(", "for": "5m"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status().as_u16(), 400);
    let (_, rule) = status_json(server.get(&format!("{path}/{id}")).await).await;
    assert_eq!(rule["for"], "2m", "a refused update changed the rule");
    expect_error(
        server.get(&format!("{path}/%FF")).await,
        400,
        "invalid_request",
    )
    .await;
    for bad_id in ["not-a-rule", "00000000-0000-0000-0000-000000000000"] {
        expect_error(
            server.get(&format!("{path}/{bad_id}")).await,
            404,
            "not_found",
        )
        .await;
    }
    let resp = server.delete(&format!("{path}/{id}")).await;
    assert_eq!(resp.status().as_u16(), 204);
    expect_error(server.get(&format!("{path}/{id}")).await, 404, "not_found").await;
}

async fn a_crossing_fires_is_delivered_and_resolves_once(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    let mut server = server_with_channel(&db, &dir, &receiver).await;
    report_depth(&server, "w1", 10.0).await;
    let rule_id = create_rule(
        &server,
        json!({"name": "QueueHigh", "expr": "queue_depth > 100", "for": "3s",
               "interval": "1s", "group_wait": "0s", "group_interval": "1s",
               "channels": ["ops"], "labels": {"severity": "page"},
               "annotations": {"summary": "{{ $labels.component }} queue at {{ $value }}"}}),
    )
    .await;

    // A spike shorter than `for`: pending, then gone, and nothing is sent.
    report_depth(&server, "w1", 150.0).await;
    wait_state(&server, "w1", "pending").await;
    report_depth(&server, "w1", 20.0).await;
    poll_until(WAIT, "the spike's pending alert to go", || async {
        alerts(&server).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(receiver.count(), 0, "a spike shorter than `for` was sent");

    // A lasting crossing: pending, firing after `for`, delivered.
    report_depth(&server, "w1", 150.0).await;
    let pending = wait_state(&server, "w1", "pending").await;
    let firing = wait_state(&server, "w1", "firing").await;
    let active = parse_ts(&pending["active_at"]);
    let fired = parse_ts(&firing["fired_at"]);
    assert!(
        fired - active >= chrono::Duration::seconds(3),
        "{pending} → {firing}"
    );
    assert_eq!(firing["value"], "150");
    let sent = wait_requests(&receiver, 1).await;
    let n = &sent[0];
    assert_eq!(n["version"], "4");
    assert_eq!(n["status"], "firing");
    assert_eq!(n["receiver"], "ops");
    let a = &n["alerts"][0];
    assert_eq!(a["status"], "firing");
    assert_eq!(
        a["labels"],
        json!({"alertname": "QueueHigh", "component": "w1", "severity": "page"})
    );
    assert_eq!(a["annotations"]["summary"], "w1 queue at 150");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert!(
        a["generatorURL"].as_str().unwrap_or("").ends_with(&rule_id),
        "{a}"
    );
    assert_eq!(n["commonLabels"]["alertname"], "QueueHigh");
    assert_eq!(n["alerts"].as_array().map(|a| a.len()), Some(1));

    // Falls back: resolved, delivered once.
    report_depth(&server, "w1", 5.0).await;
    let sent = wait_requests(&receiver, 2).await;
    assert_eq!(sent[1]["status"], "resolved");
    assert_eq!(sent[1]["alerts"][0]["status"], "resolved");
    assert_ne!(sent[1]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        sent[1]["alerts"][0]["fingerprint"], sent[0]["alerts"][0]["fingerprint"],
        "the resolve names the alert it ends"
    );
    assert!(alerts(&server).await.is_empty());

    // A restart sends nothing again.
    server.restart().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        receiver.count(),
        2,
        "{:#?}",
        receiver
            .requests()
            .iter()
            .map(|r| r.json())
            .collect::<Vec<_>>()
    );
    let (status, page) = status_json(
        server
            .get(&format!("/api/v2/alert-deliveries?rule={rule_id}"))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let statuses: Vec<&str> = page["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter_map(|d| d["status"].as_str())
        .collect();
    assert_eq!(statuses, vec!["sent", "sent"]);
    let (_, rule) = status_json(server.get(&format!("/api/v2/alert-rules/{rule_id}")).await).await;
    assert_eq!(rule["health"], "ok", "{rule:#}");
}

async fn several_series_go_out_grouped_and_a_receiver_that_times_out_then_fails_is_retried(
    backend: Backend,
) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    // A timeout (the answer comes after the channel's 400 ms), a 500, then
    // success.
    receiver.set_handler(|_, i| match i {
        0 => Reply::ok().delay(Duration::from_millis(2_500)),
        1 => Reply::status(500),
        _ => Reply::ok(),
    });
    let server = server_with_channel_config(&db, &dir, &receiver, json!({"timeout_ms": 400})).await;
    for c in ["w1", "w2", "w3"] {
        report_depth(&server, c, 500.0).await;
    }
    let rule_id = create_rule(
        &server,
        json!({"name": "QueueHigh", "expr": "queue_depth > 100", "interval": "1s",
               "group_wait": "2s", "channels": ["ops"]}),
    )
    .await;
    let sent = wait_requests(&receiver, 3).await;
    // Every attempt carried the same one notification of three alerts.
    for n in &sent {
        let mut components: Vec<&str> = n["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .filter_map(|a| a["labels"]["component"].as_str())
            .collect();
        components.sort();
        assert_eq!(components, vec!["w1", "w2", "w3"]);
        assert_eq!(n["groupKey"], sent[0]["groupKey"]);
    }
    let delivery = poll_until(WAIT, "the delivery to be sent", || async {
        let (_, page) = status_json(
            server
                .get(&format!("/api/v2/alert-deliveries?rule={rule_id}"))
                .await,
        )
        .await;
        page["deliveries"]
            .as_array()
            .and_then(|d| d.first().cloned())
            .filter(|d| d["status"] == "sent")
    })
    .await;
    assert_eq!(delivery["attempts"], 3, "{delivery:#}");
    assert_eq!(delivery["response_status"], 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.count(),
        3,
        "an unchanged group was sent again before repeat_interval"
    );
}

async fn a_silence_holds_an_alert_back_until_it_is_expired(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    let server = server_with_channel(&db, &dir, &receiver).await;
    // Bad silences are refused field by field and store nothing.
    for (body, field) in [
        (
            json!({"matchers": [], "endsAt": "2999-01-01T00:00:00Z", "createdBy": "a", "comment": "b"}),
            "matchers",
        ),
        (
            json!({"matchers": [{"name": "component", "value": ".*", "isRegex": true}],
                "endsAt": "2999-01-01T00:00:00Z", "createdBy": "a", "comment": "b"}),
            "matchers",
        ),
        (
            json!({"matchers": [{"name": "component", "value": "w2", "isRegex": false}],
                "endsAt": "2001-01-01T00:00:00Z", "createdBy": "a", "comment": "b"}),
            "endsAt",
        ),
        (
            json!({"matchers": [{"name": "component", "value": "w2", "isRegex": false}],
                "endsAt": "2999-01-01T00:00:00Z", "comment": "b"}),
            "createdBy",
        ),
    ] {
        let err = expect_error(
            server.post_json("/api/v2/silences", &body).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(
            err["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x["field"] == field)),
            "{body}: {err:#}"
        );
    }
    let (_, listed) = status_json(server.get("/api/v2/silences").await).await;
    assert_eq!(listed["silences"], json!([]));

    let (status, silence) = status_json(
        server
            .post_json(
                "/api/v2/silences",
                &json!({"matchers": [{"name": "component", "value": "w2", "isRegex": false},
                                     {"name": "alertname", "value": "Queue.*", "isRegex": true}],
                        "endsAt": "2999-01-01T00:00:00Z", "createdBy": "ops", "comment": "deploy"}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201, "{silence:#}");
    assert_eq!(silence["status"]["state"], "active");
    let silence_id = silence["silenceID"].as_str().expect("id").to_string();
    report_depth(&server, "w1", 500.0).await;
    report_depth(&server, "w2", 500.0).await;
    let rule_id = create_rule(
        &server,
        json!({"name": "QueueHigh", "expr": "queue_depth > 100", "interval": "1s",
               "group_wait": "0s", "group_interval": "1s", "channels": ["ops"]}),
    )
    .await;
    let sent = wait_requests(&receiver, 1).await;
    let components: Vec<&str> = sent[0]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["labels"]["component"].as_str())
        .collect();
    assert_eq!(components, vec!["w1"], "a silenced alert was sent");
    let w2 = wait_state(&server, "w2", "firing").await;
    assert_eq!(w2["silenced_by"], json!([silence_id]));
    let silenced = poll_until(WAIT, "a silenced delivery", || async {
        let (_, page) = status_json(
            server
                .get(&format!(
                    "/api/v2/alert-deliveries?rule={rule_id}&status=silenced"
                ))
                .await,
        )
        .await;
        page["deliveries"]
            .as_array()
            .and_then(|d| d.first().cloned())
    })
    .await;
    assert_eq!(silenced["attempts"], 0);
    assert_eq!(
        silenced["payload"]["alerts"][0]["labels"]["component"],
        "w2"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.count(),
        1,
        "the silenced alert was sent or recorded again"
    );

    // Expired early: w2 is notified at the group's next flush.
    let resp = server
        .delete(&format!("/api/v2/silences/{silence_id}"))
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    expect_error(
        server
            .delete(&format!("/api/v2/silences/{silence_id}"))
            .await,
        409,
        "already_expired",
    )
    .await;
    let sent = wait_requests(&receiver, 2).await;
    let mut components: Vec<&str> = sent[1]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["labels"]["component"].as_str())
        .collect();
    components.sort();
    assert_eq!(components, vec!["w1", "w2"]);
    let (_, s) = status_json(server.get(&format!("/api/v2/silences/{silence_id}")).await).await;
    assert_eq!(s["status"]["state"], "expired");
}

async fn an_event_count_rule_fires_per_workflow(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    let server = server_with_channel(&db, &dir, &receiver).await;
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let mut events = Vec::new();
    for (workflow, failures) in [("wf-a", 4), ("wf-b", 3)] {
        for i in 0..failures {
            events.push(
                json!({"event_type": "TaskFailed", "event_id": format!("{workflow}/{i}/failed"),
                "event_time": now - 10.0 + f64::from(i), "session_id": "s1",
                "asyncflow.workflow_id": workflow, "task_id": format!("task.{i:06}"),
                "backend": "dragon"}),
            );
        }
        // Completions of the same workflow are not counted.
        events.push(
            json!({"event_type": "TaskCompleted", "event_id": format!("{workflow}/ok"),
            "event_time": now - 5.0, "asyncflow.workflow_id": workflow, "backend": "dragon"}),
        );
    }
    // An old failure, outside the window.
    events.push(
        json!({"event_type": "TaskFailed", "event_id": "wf-b/old", "event_time": now - 900.0,
        "asyncflow.workflow_id": "wf-b", "backend": "dragon"}),
    );
    let (status, body) =
        status_json(server.post_json("/api/v2/events", &json!(events)).await).await;
    assert_eq!(status, 200, "{body:#}");
    create_rule(
        &server,
        json!({"name": "TasksFailing", "interval": "1s", "group_wait": "0s",
               "group_by": ["workflow_id"], "channels": ["ops"],
               "events": {"type": "TaskFailed", "window": "5m", "by": ["workflow_id"],
                          "where": {"backend": "dragon"}, "op": ">", "threshold": 3},
               "annotations": {"summary": "{{ $value }} failures in {{ $labels.workflow_id }}"}}),
    )
    .await;
    let sent = wait_requests(&receiver, 1).await;
    let alerts = sent[0]["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{:#}", sent[0]);
    assert_eq!(
        alerts[0]["labels"],
        json!({"alertname": "TasksFailing", "event_type": "TaskFailed", "workflow_id": "wf-a"})
    );
    assert_eq!(alerts[0]["annotations"]["summary"], "4 failures in wf-a");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.count(), 1);
}

async fn a_preview_answers_exact_pending_firing_and_resolve_times(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    // 30 minutes of history at 15 s: 50, then 150 from +10m, 50 again from +20m.
    let base = (chrono::Utc::now().timestamp() - 3600) / 60 * 60;
    let at = |s: i64| {
        chrono::DateTime::from_timestamp(base + s, 0)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let items: Vec<MetricItem> = (0..120)
        .map(|i| {
            let v = if (40..80).contains(&i) { 150.0 } else { 50.0 };
            gauge("queue_depth", v).at(&at(i * 15))
        })
        .collect();
    server.report_ok(&report("w1", items)).await;
    let body = json!({"rule": {"name": "QueueHigh", "expr": "queue_depth > 100", "for": "2m"},
                      "start": base, "end": base + 1800, "step": "15s"});
    let (status, p) =
        status_json(server.post_json("/api/v2/alert-rules/preview", &body).await).await;
    assert_eq!(status, 200, "{p:#}");
    assert_eq!(p["evaluations"], 121);
    let alerts = p["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{p:#}");
    assert_eq!(
        alerts[0]["labels"],
        json!({"alertname": "QueueHigh", "component": "w1"})
    );
    let ms = |v: &Value| parse_ts(v).timestamp() - base;
    let transitions: Vec<(String, i64)> = alerts[0]["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| (t["state"].as_str().unwrap_or("").to_string(), ms(&t["at"])))
        .collect();
    assert_eq!(
        transitions,
        vec![
            ("pending".into(), 600),
            ("firing".into(), 720),
            ("resolved".into(), 1200)
        ]
    );
    // group_wait 30s after firing; the resolve at the first group_interval (5m) after it.
    let notes: Vec<(String, i64)> = p["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| (n["status"].as_str().unwrap_or("").to_string(), ms(&n["at"])))
        .collect();
    assert_eq!(
        notes,
        vec![("firing".into(), 750), ("resolved".into(), 1350)]
    );
    // Nothing was stored or sent: no rule exists.
    let (_, rules) = status_json(server.get("/api/v2/alert-rules").await).await;
    assert_eq!(rules["rules"], json!([]));
    for (bad, field) in [
        (json!({"start": base, "end": base + 60}), "rule"),
        (
            json!({"rule": {"name": "a", "expr": "sum("}, "start": base, "end": base + 60}),
            "rule.expr",
        ),
        (
            json!({"rule": {"name": "a", "expr": "x > 1"}, "start": base + 60, "end": base}),
            "end",
        ),
        (
            json!({"rule": {"name": "a", "expr": "x > 1"}, "start": base, "end": base + 86400 * 30, "step": "1s"}),
            "step",
        ),
        (
            json!({"rule": {"name": "a", "expr": "x > 1"}, "end": base}),
            "start",
        ),
    ] {
        let err = expect_error(
            server.post_json("/api/v2/alert-rules/preview", &bad).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(
            err["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x["field"] == field)),
            "{bad}: {err:#}"
        );
    }
}

const RULE_FILE: &str = r#"
groups:
  - name: workers
    interval: 1s
    rules:
      - record: component:queue_depth:max
        expr: max by (component) (queue_depth)
      - alert: QueueHigh
        expr: queue_depth > 100
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.component }} queue at {{ $value }}"
"#;

async fn a_prometheus_rule_file_is_imported_and_its_rules_fire(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    let server = server_with_channel(&db, &dir, &receiver).await;
    let import = |file: String, query: &'static str| {
        let server = &server;
        async move {
            server
                .client()
                .post(server.url(&format!("/api/v2/alert-rules/import{query}")))
                .header("content-type", "application/yaml")
                .body(file)
                .send()
                .await
                .expect("import")
        }
    };
    let bad = RULE_FILE.replace("queue_depth > 100", "rate(queue_depth[5m]");
    let err = expect_error(import(bad, "?channels=ops").await, 400, "invalid_request").await;
    assert_eq!(
        err["details"][0]["field"], "groups[0].rules[1].expr",
        "{err:#}"
    );
    expect_error(import("groups: [".into(), "").await, 400, "invalid_request").await;
    expect_error(
        import(RULE_FILE.into(), "?channels=nowhere").await,
        400,
        "invalid_query",
    )
    .await;
    let (_, rules) = status_json(server.get("/api/v2/alert-rules").await).await;
    assert_eq!(rules["rules"], json!([]), "a refused file created rules");

    let (status, body) = status_json(import(RULE_FILE.into(), "?channels=ops").await).await;
    assert_eq!(status, 201, "{body:#}");
    assert_eq!(body["created"][0]["name"], "workers:QueueHigh");
    assert_eq!(body["created"][0]["alertname"], "QueueHigh");
    assert_eq!(body["created"][0]["interval"], "1s");
    assert_eq!(body["skipped"][0]["record"], "component:queue_depth:max");
    expect_error(
        import(RULE_FILE.into(), "?channels=ops").await,
        409,
        "already_exists",
    )
    .await;
    let (status, again) =
        status_json(import(RULE_FILE.into(), "?channels=ops&replace=true").await).await;
    assert_eq!(status, 201, "{again:#}");
    assert_eq!(again["replaced"], json!(["workers:QueueHigh"]));

    report_depth(&server, "w1", 250.0).await;
    let sent = poll_until(WAIT, "the imported rule's notification", || async {
        receiver.requests().first().map(|r| r.json())
    })
    .await;
    assert_eq!(
        sent["alerts"][0]["labels"],
        json!({"alertname": "QueueHigh", "component": "w1", "severity": "page"})
    );
    assert_eq!(
        sent["alerts"][0]["annotations"]["summary"],
        "w1 queue at 250"
    );
}

async fn a_commit_touching_a_rules_series_evaluates_it_at_once(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    let server = server_with_channel(&db, &dir, &receiver).await;
    report_depth(&server, "w1", 10.0).await;
    // An hour between scheduled evaluations: only the commit can wake it.
    create_rule(
        &server,
        json!({"name": "QueueHigh", "expr": "queue_depth{component=\"w1\"} > 100",
               "interval": "1h", "group_wait": "0s", "channels": ["ops"]}),
    )
    .await;
    poll_until(WAIT, "the first evaluation", || async {
        let (_, rules) = status_json(server.get("/api/v2/alert-rules").await).await;
        (rules["rules"][0]["health"] == "ok").then_some(())
    })
    .await;
    // A commit of another series does not fire it; one of its own does.
    server
        .report_ok(&report("w2", [gauge("queue_depth", 500.0)]))
        .await;
    report_depth(&server, "w1", 150.0).await;
    let sent = wait_requests(&receiver, 1).await;
    assert_eq!(sent[0]["alerts"][0]["labels"]["component"], "w1");
    assert_eq!(sent[0]["alerts"].as_array().map(|a| a.len()), Some(1));
    // A crossing committed right after an evaluation (here the one that
    // creating the rule causes) is evaluated once the 100 ms between two
    // commit-woken evaluations have passed, not an hour later.
    for n in 0..3 {
        let component = format!("burst{n}");
        create_rule(
            &server,
            json!({"name": format!("Burst{n}"),
                   "expr": format!("queue_depth{{component=\"{component}\"}} > 100"),
                   "interval": "1h", "group_wait": "0s", "channels": ["ops"]}),
        )
        .await;
        report_depth(&server, &component, 500.0).await;
        let sent = wait_requests(&receiver, 2 + n).await;
        assert_eq!(
            sent[1 + n]["alerts"][0]["labels"]["component"],
            component.as_str()
        );
    }
}

async fn an_unchanged_firing_group_is_sent_again_after_repeat_interval(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    let server = server_with_channel(&db, &dir, &receiver).await;
    report_depth(&server, "w1", 150.0).await;
    create_rule(
        &server,
        json!({"name": "QueueHigh", "expr": "queue_depth > 100", "interval": "1s",
               "group_wait": "0s", "group_interval": "1s", "repeat_interval": "3s",
               "channels": ["ops"]}),
    )
    .await;
    wait_requests(&receiver, 3).await;
    let r = receiver.requests();
    for pair in r.windows(2).take(2) {
        let (a, b) = (pair[0].json(), pair[1].json());
        assert_eq!(
            (a["status"].as_str(), b["status"].as_str()),
            (Some("firing"), Some("firing"))
        );
        assert_eq!(a["groupKey"], b["groupKey"]);
        assert_eq!(a["alerts"][0]["fingerprint"], b["alerts"][0]["fingerprint"]);
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(2_900),
            "sent again after {gap:?}, before repeat_interval"
        );
    }
}

backend_tests!(
    an_unchanged_firing_group_is_sent_again_after_repeat_interval,
    a_commit_touching_a_rules_series_evaluates_it_at_once,
    a_prometheus_rule_file_is_imported_and_its_rules_fire,
    a_preview_answers_exact_pending_firing_and_resolve_times,
    an_event_count_rule_fires_per_workflow,
    a_silence_holds_an_alert_back_until_it_is_expired,
    rules_are_checked_field_by_field,
    a_crossing_fires_is_delivered_and_resolves_once,
    several_series_go_out_grouped_and_a_receiver_that_times_out_then_fails_is_retried,
);
