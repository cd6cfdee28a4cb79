//! Reports are group-committed, but one report the database refuses never
//! fails another client's report that would have succeeded alone: the
//! database itself is made to refuse series of components named `poison…`
//! (a trigger, on both backends), and many valid reports sent concurrently
//! with poison ones are all `200` and stored.

use std::time::Duration;

use sqlx::Connection;
use vigil_tests::{backend_tests, gauge, report, unique, Backend, TestDatabase, TestServer};

/// Makes the server's database refuse every new series of a `poison…` component.
async fn install_poison_trigger(db: &TestDatabase) {
    match db.database_url() {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query(
                "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger AS $$
                 BEGIN RAISE EXCEPTION 'poison component %', NEW.component; END $$ LANGUAGE plpgsql",
            )
            .execute(&mut conn)
            .await
            .expect("function");
            sqlx::query(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON series FOR EACH ROW
                 WHEN (NEW.component LIKE 'poison%') EXECUTE FUNCTION refuse_poison()",
            )
            .execute(&mut conn)
            .await
            .expect("trigger");
        }
        None => {
            let path = db.data_dir().join("vigil.db");
            let url = format!("sqlite://{}", path.display());
            let mut conn = sqlx::SqliteConnection::connect(&url)
                .await
                .expect("connect");
            sqlx::query(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON series
                 WHEN NEW.component LIKE 'poison%'
                 BEGIN SELECT RAISE(ABORT, 'poison component'); END",
            )
            .execute(&mut conn)
            .await
            .expect("trigger");
        }
    }
}

async fn a_report_the_database_refuses_fails_only_itself(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    install_poison_trigger(&db).await;
    let client = server.client();
    let url = server.url("/api/metrics/report");
    let mut tasks = Vec::new();
    for round in 0..3 {
        for i in 0..51 {
            let poison = i % 8 == 3;
            let component = unique(if poison { "poison" } else { "valid" });
            let body = report(
                &component,
                (0..20).map(|k| gauge(&format!("m{round}_{k}"), k as f64)),
            );
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .json(&body)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .expect("report");
                (component, poison, resp.status().as_u16())
            }));
        }
    }
    let mut valid = Vec::new();
    for t in tasks {
        let (component, poison, status) = t.await.expect("task");
        if poison {
            assert_eq!(status, 500, "{component}: the database refuses it");
        } else {
            assert_eq!(
                status, 200,
                "{component} would succeed alone but got {status}"
            );
            valid.push(component);
        }
    }
    assert_eq!(valid.len(), 3 * 45);
    for component in valid {
        let rows = server.query_all(&[("component_name", &component)]).await;
        assert_eq!(
            rows.len(),
            20,
            "{component} was acknowledged but not stored"
        );
    }
}

backend_tests!(a_report_the_database_refuses_fails_only_itself);
