//! A UDP relay between a node and the coordinator that a test can cut: a network partition
//! (or a party that dies without a word) on loopback, with no privileges needed.
//!
//! Every client address gets its own upstream socket, so the coordinator sees one remote per
//! node, as it would through NAT. While cut, packets in both directions are dropped silently.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// A running relay; stops when dropped.
pub struct Relay {
    /// Where clients send (what a node is configured to dial).
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    _tasks: JoinSet<()>,
}

impl Relay {
    /// Relays datagrams between clients and `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let (f, c) = (front.clone(), cut.clone());
        tasks.spawn(async move {
            let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut back_tasks = JoinSet::new();
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, client)) = f.recv_from(&mut buf).await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let up = match upstream.get(&client) {
                    Some(u) => u.clone(),
                    None => {
                        let Ok(u) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        if u.connect(target).await.is_err() {
                            continue;
                        }
                        let u = Arc::new(u);
                        let (u2, f2, c2) = (u.clone(), f.clone(), c.clone());
                        back_tasks.spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok(n) = u2.recv(&mut buf).await {
                                if !c2.load(Ordering::SeqCst) {
                                    let _ = f2.send_to(&buf[..n], client).await;
                                }
                            }
                        });
                        upstream.insert(client, u.clone());
                        u
                    }
                };
                let _ = up.send(&buf[..n]).await;
            }
        });
        Ok(Relay {
            addr,
            cut,
            _tasks: tasks,
        })
    }

    /// Cuts (`true`) or heals (`false`) the link: while cut, nothing gets through either way.
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}
