//! The Slack and PagerDuty notifier plugins, end to end: a rule fires and
//! resolves through each into a strict stand-in that checks the service's
//! real format (`receivers::slack`, `receivers::pagerduty`); the channel
//! test answers with each service's real failures; a rate-limited send is
//! retried until it goes through.

use std::time::Duration;

use vigil_tests::receivers::{pagerduty, slack};
use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(60);
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

fn manifest(receiver: &WebhookReceiver) -> String {
    format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\ncall_timeout_ms = 3000\n",
        receiver.origin()
    )
}

async fn start(
    db: &TestDatabase,
    dir: &PluginDir,
    plugin: &str,
    crate_name: &str,
    receiver: &WebhookReceiver,
) -> TestServer {
    dir.install_with_manifest(plugin, crate_name, &manifest(receiver));
    let server = TestServer::builder(db).plugin_dir(dir.path()).start().await;
    server
        .wait_plugin(plugin, WAIT, "loaded", |p| p["state"] == "loaded")
        .await;
    server
}

async fn channel(server: &TestServer, body: Value) -> String {
    let (status, json) = status_json(
        server
            .post_json("/api/v2/notification-channels", &body)
            .await,
    )
    .await;
    assert_eq!(status, 201, "{json:#}");
    assert!(
        !json["config"].to_string().contains("services/T0"),
        "a secret was answered: {json}"
    );
    json["id"].as_str().expect("id").to_string()
}

async fn rule(server: &TestServer) {
    let (status, json) = status_json(
        server
            .post_json(
                "/api/v2/alert-rules",
                &json!({"name": "QueueHigh", "expr": "queue_depth > 100", "interval": "1s",
                        "group_wait": "0s", "group_interval": "1s", "channels": ["pager"],
                        "labels": {"severity": "critical"},
                        "annotations": {"summary": "{{ $labels.component }} queue at {{ $value }}"}}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201, "{json:#}");
}

async fn wait_count(receiver: &WebhookReceiver, n: usize) -> Vec<ReceivedRequest> {
    poll_until(WAIT, &format!("{n} request(s)"), || async {
        let r = receiver.requests();
        (r.len() >= n).then_some(r)
    })
    .await
}

async fn slack_gets_firing_and_resolved_messages_and_its_failures_are_answered(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    receiver.set_handler(|r, _| slack::reply(r, SlackAnswer::Ok));
    let server = start(&db, &dir, "slack", "slack-notifier", &receiver).await;
    let id = channel(
        &server,
        json!({"name": "pager", "plugin": "slack",
               "config": {"webhook_url": receiver.url("/services/T000/B000/XXXX")}}),
    )
    .await;
    let test_path = format!("/api/v2/notification-channels/{id}/test");
    let (status, ok) = status_json(server.post_json(&test_path, &json!({})).await).await;
    assert_eq!(status, 200, "{ok:#}");
    assert!(
        ok["receipt"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("ok"),
        "{ok}"
    );
    for (answer, status, says) in [
        (SlackAnswer::InvalidToken, 403, "invalid_token"),
        (SlackAnswer::ChannelNotFound, 404, "channel_not_found"),
        (SlackAnswer::ChannelIsArchived, 410, "channel_is_archived"),
        (SlackAnswer::RateLimited(7), 429, "rate-limited"),
    ] {
        receiver.set_handler(move |r, _| slack::reply(r, answer));
        let err = expect_error(
            server.post_json(&test_path, &json!({})).await,
            status,
            "receiver_rejected",
        )
        .await;
        assert!(
            err["message"].as_str().unwrap_or("").contains(says),
            "{answer:?}: {err:#}"
        );
    }
    // Every message so far was well-formed.
    for r in receiver.requests() {
        slack::check_message(&r).unwrap_or_else(|e| panic!("malformed Slack message: {e}"));
    }

    // A rule fires and resolves; the first send is rate-limited and retried.
    let before = receiver.count();
    receiver.set_handler(move |r, i| {
        slack::reply(
            r,
            if i == before {
                SlackAnswer::RateLimited(1)
            } else {
                SlackAnswer::Ok
            },
        )
    });
    rule(&server).await;
    server
        .report_ok(&report("w1", [gauge("queue_depth", 150.0)]))
        .await;
    let got = wait_count(&receiver, before + 2).await;
    let firing = slack::check_message(&got[before + 1]).expect("well-formed");
    assert_eq!(
        got[before].json()["text"],
        firing["text"],
        "the retry is the same message"
    );
    let text = firing["text"].as_str().unwrap_or("");
    assert!(text.contains("[FIRING:1] QueueHigh"), "{text}");
    assert!(firing.to_string().contains("w1 queue at 150"), "{firing}");
    server
        .report_ok(&report("w1", [gauge("queue_depth", 10.0)]))
        .await;
    let got = wait_count(&receiver, before + 3).await;
    let resolved = slack::check_message(&got[before + 2]).expect("well-formed");
    assert!(
        resolved["text"]
            .as_str()
            .unwrap_or("")
            .contains("[RESOLVED] QueueHigh"),
        "{resolved}"
    );
    assert_ne!(
        resolved["blocks"][0], firing["blocks"][0],
        "firing and resolved look the same"
    );
}

async fn pagerduty_triggers_and_resolves_one_incident_per_alert(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    receiver.set_handler(|r, i| pagerduty::reply(r, i == 0));
    let server = start(&db, &dir, "pd", "pagerduty-notifier", &receiver).await;
    // A routing key that is not one is refused by the plugin's schema.
    let err = expect_error(
        server
            .post_json(
                "/api/v2/notification-channels",
                &json!({"name": "pager", "plugin": "pd", "config": {"routing_key": "short"}}),
            )
            .await,
        400,
        "invalid_request",
    )
    .await;
    assert!(err.to_string().contains("routing_key"), "{err:#}");
    let id = channel(
        &server,
        json!({"name": "pager", "plugin": "pd",
               "config": {"routing_key": ROUTING_KEY, "url": receiver.url("/v2/enqueue")}}),
    )
    .await;
    // The channel test: 429 passed on, then accepted with PagerDuty's dedup_key.
    let test_path = format!("/api/v2/notification-channels/{id}/test");
    expect_error(
        server.post_json(&test_path, &json!({})).await,
        429,
        "receiver_rejected",
    )
    .await;
    let (status, ok) = status_json(server.post_json(&test_path, &json!({})).await).await;
    assert_eq!(status, 200, "{ok:#}");
    assert!(
        ok["receipt"]["id"]
            .as_str()
            .is_some_and(|k| k.starts_with("vigil-")),
        "{ok}"
    );
    let before = receiver.count();

    rule(&server).await;
    for c in ["w1", "w2"] {
        server
            .report_ok(&report(c, [gauge("queue_depth", 150.0)]))
            .await;
    }
    // The two alerts may reach PagerDuty in one notification or in two (the
    // group changes when the second arrives, and a changed group repeats its
    // firing alerts): what counts is one incident per alert.
    let events = |from: usize| -> Vec<Value> {
        receiver.requests()[from..]
            .iter()
            .map(|r| pagerduty::check_event(r).unwrap_or_else(|e| panic!("invalid event: {e:?}")))
            .collect()
    };
    let keys_of = |evs: &[Value], action: &str| -> std::collections::BTreeSet<String> {
        evs.iter()
            .filter(|e| e["event_action"] == action)
            .filter_map(|e| e["dedup_key"].as_str().map(str::to_string))
            .collect()
    };
    poll_until(WAIT, "a trigger for each alert", || async {
        (keys_of(&events(before), "trigger").len() == 2).then_some(())
    })
    .await;
    for t in events(before) {
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(t["payload"]["severity"], "critical");
        assert!(
            t["payload"]["summary"]
                .as_str()
                .unwrap_or("")
                .starts_with("QueueHigh: w"),
            "{t}"
        );
    }
    let triggered = keys_of(&events(before), "trigger");
    for c in ["w1", "w2"] {
        server
            .report_ok(&report(c, [gauge("queue_depth", 5.0)]))
            .await;
    }
    poll_until(WAIT, "a resolve for each incident", || async {
        (keys_of(&events(before), "resolve") == triggered).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Each incident's last event is its resolve, and nothing else was opened.
    let all = events(before);
    assert_eq!(keys_of(&all, "trigger"), triggered);
    for key in &triggered {
        let last = all
            .iter()
            .rev()
            .find(|e| e["dedup_key"] == key.as_str())
            .expect("events");
        assert_eq!(
            last["event_action"], "resolve",
            "{key} was not closed last: {all:#?}"
        );
    }
    // A refused event is permanent, with PagerDuty's reasons.
    receiver.set_handler(|_, _| {
        Reply::status(400).json(
            &json!({"status": "invalid event", "message": "Event object is invalid",
            "errors": ["'payload.summary' is missing or blank"]}),
        )
    });
    let err = expect_error(
        server.post_json(&test_path, &json!({})).await,
        400,
        "receiver_rejected",
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("payload.summary"),
        "{err:#}"
    );
}

async fn alerts_are_forwarded_to_a_real_alertmanager_and_resolved_there(backend: Backend) {
    let am_hook = WebhookReceiver::start().await;
    let Some(am) = AlertmanagerServer::start("team", &am_hook.url("/am"), &["alertname"]).await
    else {
        return;
    };
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    dir.install_with_manifest(
        "am",
        "alertmanager-notifier",
        &format!(
            "[capabilities]\nallowed_hosts = [\"{}\"]\ncall_timeout_ms = 3000\n",
            am.origin()
        ),
    );
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    server
        .wait_plugin("am", WAIT, "loaded", |p| p["state"] == "loaded")
        .await;
    channel(
        &server,
        json!({"name": "pager", "plugin": "am", "config": {"url": am.origin()}}),
    )
    .await;
    let (status, rule) = status_json(
        server
            .post_json(
                "/api/v2/alert-rules",
                &json!({"name": "QueueHigh", "expr": "queue_depth > 100", "interval": "1s",
                        "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1m",
                        "channels": ["pager"], "labels": {"severity": "critical"},
                        "annotations": {"summary": "{{ $labels.component }} queue at {{ $value }}"}}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201, "{rule:#}");
    let rule_id = rule["id"].as_str().expect("id").to_string();
    server
        .report_ok(&report("w1", [gauge("queue_depth", 150.0)]))
        .await;
    let held = poll_until(WAIT, "the alert in Alertmanager", || async {
        am.alerts()
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "QueueHigh")
    })
    .await;
    assert_eq!(
        held["labels"],
        json!({"alertname": "QueueHigh", "component": "w1", "severity": "critical"})
    );
    assert_eq!(held["annotations"]["summary"], "w1 queue at 150");
    assert_eq!(held["status"]["state"], "active", "{held:#}");
    assert!(
        held["generatorURL"]
            .as_str()
            .unwrap_or("")
            .ends_with(&rule_id),
        "{held}"
    );
    let ends = parse_ts(&held["endsAt"]);
    assert!(
        ends > chrono::Utc::now() + chrono::Duration::hours(4),
        "{held}"
    );
    // Alertmanager routes it to its own receiver...
    let fired = poll_until(WAIT, "Alertmanager's firing notification", || async {
        am_hook
            .requests()
            .iter()
            .map(|r| r.json())
            .find(|n| n["status"] == "firing")
    })
    .await;
    assert_eq!(fired["alerts"][0]["labels"]["component"], "w1");
    // ...and resolves it when Vigil says it ended.
    server
        .report_ok(&report("w1", [gauge("queue_depth", 5.0)]))
        .await;
    let resolved = poll_until(WAIT, "Alertmanager's resolved notification", || async {
        am_hook
            .requests()
            .iter()
            .map(|r| r.json())
            .find(|n| n["status"] == "resolved")
    })
    .await;
    assert_eq!(
        resolved["alerts"][0]["fingerprint"],
        fired["alerts"][0]["fingerprint"]
    );
    assert!(
        am.alerts()
            .await
            .iter()
            .all(|a| a["status"]["state"] != "active"),
        "still active in Alertmanager: {:#?}",
        am.alerts().await
    );
}

backend_tests!(
    alerts_are_forwarded_to_a_real_alertmanager_and_resolved_there,
    slack_gets_firing_and_resolved_messages_and_its_failures_are_answered,
    pagerduty_triggers_and_resolves_one_incident_per_alert,
);
