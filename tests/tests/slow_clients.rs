//! Slow and silent clients cannot hold connections: headers sent a byte at a
//! time, a body at 1 byte/s, a connection that never sends anything and an
//! idle keep-alive connection are all closed within the configured timeouts,
//! on both listeners; the connection cap makes extra connections wait; and
//! health keeps answering while 1,000 such connections are held.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_tests::{status_json, Backend, TestDatabase, TestServer};

async fn server_with(args: &[&str]) -> (TestDatabase, TestServer) {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::builder(&db)
        .args(args.iter().copied())
        .start()
        .await;
    (db, server)
}

/// Reads until the peer closes the connection (or `limit` passes); returns
/// what was read and whether it was closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&out).into_owned(), false);
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test]
async fn a_connection_that_never_sends_anything_is_closed_on_both_listeners() {
    let (_db, server) = server_with(&["--header-read-timeout", "1s"]).await;
    for addr in [server.addr(), server.metrics_addr().expect("metrics addr")] {
        let started = Instant::now();
        let mut silent = connect(addr).await;
        let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(15)).await;
        assert!(
            closed,
            "{addr}: a silent connection was still open after 15 s"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{addr}: closed before the timeout"
        );
    }
}

#[tokio::test]
async fn headers_sent_one_byte_at_a_time_are_cut_off() {
    let (_db, server) = server_with(&["--header-read-timeout", "2s"]).await;
    for addr in [server.addr(), server.metrics_addr().expect("metrics addr")] {
        let mut slow = connect(addr).await;
        let request = b"GET /api/v2/health HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let started = Instant::now();
        let mut cut = false;
        for byte in request {
            if slow.write_all(&[*byte]).await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if started.elapsed() > Duration::from_secs(6) {
                break;
            }
        }
        let (answer, closed) = if cut {
            (String::new(), true)
        } else {
            read_until_closed(&mut slow, Duration::from_secs(5)).await
        };
        assert!(
            closed,
            "{addr}: a byte-at-a-time client kept its connection"
        );
        assert!(
            !answer.starts_with("HTTP/1.1 200"),
            "{addr}: the slow request was served: {answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "{addr}: the header timeout did not cut the connection ({:?})",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_body_sent_at_one_byte_per_second_gets_a_json_408() {
    let (_db, server) = server_with(&["--body-read-timeout", "2s"]).await;
    let mut slow = connect(server.addr()).await;
    slow.write_all(
        b"POST /api/metrics/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
    )
    .await
    .expect("write head");
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if slow.write_all(b" ").await.is_err() {
                break;
            }
            let mut buf = [0u8; 4096];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(10), slow.read(&mut buf)).await
            {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        String::new()
    });
    let answer = writer.await.expect("writer");
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "expected a 408 for the slow body, got: {answer:?}"
    );
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Nothing of it was stored.
    let page = server.query_page(&[]).await;
    assert_eq!(page["samples"].as_array().map(Vec::len), Some(0), "{page}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_db, server) =
        server_with(&["--idle-timeout", "1s", "--header-read-timeout", "30s"]).await;
    for addr in [server.addr(), server.metrics_addr().expect("metrics addr")] {
        let path = if addr == server.addr() {
            "/api/v2/health"
        } else {
            "/metrics"
        };
        let mut conn = connect(addr).await;
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut buf = [0u8; 65536];
        let n = conn.read(&mut buf).await.expect("read answer");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let started = Instant::now();
        let (_, closed) = read_until_closed(&mut conn, Duration::from_secs(15)).await;
        assert!(closed, "{addr}: an idle keep-alive connection stayed open");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

#[tokio::test]
async fn health_keeps_answering_while_a_thousand_slow_connections_are_held() {
    let (_db, server) = server_with(&[]).await;
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut c = connect(server.addr()).await;
        // Half never send a byte, half start a request and stall.
        if i % 2 == 0 {
            let _ = c
                .write_all(b"POST /api/metrics/report HTTP/1.1\r\nHo")
                .await;
        }
        held.push(c);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    for _ in 0..20 {
        let resp = client
            .get(server.url("/api/v2/health"))
            .send()
            .await
            .expect("health answers while 1,000 slow connections are open");
        let (status, body) = status_json(resp).await;
        assert_eq!(status, 200, "{body}");
    }
    drop(held);
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_is_closed() {
    let (_db, server) =
        server_with(&["--max-connections", "4", "--header-read-timeout", "2s"]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(server.addr()).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let resp = client
        .get(server.url("/api/v2/health"))
        .send()
        .await
        .expect("health answers once a slot is free");
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "the fifth connection was served while four were open ({:?})",
        started.elapsed()
    );
}
