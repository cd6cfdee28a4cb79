//! A TCP proxy that can be cut and restored, to simulate a database outage.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------
// TCP proxy
// ---------------------------------------------------------------------------

/// A TCP forwarder `127.0.0.1:<port>` → `target` that can be cut and restored,
/// to simulate a database outage. Runs on the current tokio runtime.
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    accept_task: Option<tokio::task::JoinHandle<()>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TcpProxy {
    /// Starts forwarding from a fresh port on 127.0.0.1 to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let mut p = TcpProxy {
            addr: "127.0.0.1:0".parse().expect("addr"),
            target,
            accept_task: None,
            conns: Arc::default(),
        };
        p.listen().await;
        p
    }

    async fn listen(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(self.addr)
            .unwrap_or_else(|e| panic!("proxy bind {}: {e}", self.addr));
        let listener = socket.listen(128).expect("listen");
        self.addr = listener.local_addr().expect("local addr");
        let target = self.target;
        let conns = self.conns.clone();
        self.accept_task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut c = conns.lock().expect("conns");
                c.retain(|h| !h.is_finished());
                c.push(task.abort_handle());
            }
        }));
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every forwarded connection.
    pub async fn stop(&mut self) {
        if let Some(t) = self.accept_task.take() {
            t.abort();
            let _ = t.await;
        }
        for h in self.conns.lock().expect("conns").drain(..) {
            h.abort();
        }
        // Give aborted tasks a moment to drop their sockets.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Listens again on the same port.
    pub async fn start_again(&mut self) {
        assert!(self.accept_task.is_none(), "proxy is running");
        self.listen().await;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(t) = self.accept_task.take() {
            t.abort();
        }
        if let Ok(mut c) = self.conns.lock() {
            for h in c.drain(..) {
                h.abort();
            }
        }
    }
}
