//! A UDP relay in front of a QUIC endpoint — the coordinator's, or a node's peer endpoint —
//! that a test can cut or slow down: a network partition (or a party that dies without a word)
//! or a WAN link on loopback, with no privileges needed (there is no netem here).
//!
//! Every client address gets its own upstream socket, so the endpoint behind it sees one remote
//! per client, as it would through NAT. While cut, packets in both directions are dropped silently.
//! With a delay set, every datagram is held that long (plus a uniform jitter) in each
//! direction; datagrams keep their order.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How the link behaves, shared by the relay's tasks.
#[derive(Default)]
struct Link {
    cut: AtomicBool,
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
}

impl Link {
    /// When a datagram received now leaves, never before the one before it (`last`).
    fn deadline(&self, last: Instant) -> Instant {
        let (d, j) = (
            self.delay_ms.load(Ordering::Relaxed),
            self.jitter_ms.load(Ordering::Relaxed),
        );
        let extra = if j > 0 {
            rand::rng().random_range(0..=j)
        } else {
            0
        };
        (Instant::now() + Duration::from_millis(d + extra)).max(last)
    }
}

/// Where a delayed datagram goes.
enum Out {
    Up(Arc<UdpSocket>),
    Down(Arc<UdpSocket>, SocketAddr),
}

/// One direction of one client: datagrams leave in order, each at its deadline.
fn delayed(tasks: &mut JoinSet<()>, out: Out) -> mpsc::UnboundedSender<(Instant, Vec<u8>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tasks.spawn(async move {
        while let Some((at, buf)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = match &out {
                Out::Up(u) => u.send(&buf).await,
                Out::Down(f, client) => f.send_to(&buf, *client).await,
            };
        }
    });
    tx
}

/// A running relay; stops when dropped.
pub struct Relay {
    /// Where clients send (what a node is configured to dial).
    pub addr: SocketAddr,
    link: Arc<Link>,
    _tasks: JoinSet<()>,
}

impl Relay {
    /// Relays datagrams between clients and `target`, on loopback.
    pub async fn start(target: SocketAddr) -> std::io::Result<Relay> {
        Self::start_at(Ipv4Addr::LOCALHOST.into(), target).await
    }

    /// Relays datagrams between clients and `target`, listening (and sending upstream) on
    /// `bind`: between test hosts, the test process's address on their bridge.
    pub async fn start_at(bind: IpAddr, target: SocketAddr) -> std::io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind(SocketAddr::new(bind, 0)).await?);
        let addr = front.local_addr()?;
        let link = Arc::new(Link::default());
        let mut tasks = JoinSet::new();
        let (f, l) = (front.clone(), link.clone());
        tasks.spawn(async move {
            let mut upstream = HashMap::new();
            let mut side_tasks = JoinSet::new();
            let mut buf = vec![0u8; 65_536];
            let mut last_up = Instant::now();
            while let Ok((n, client)) = f.recv_from(&mut buf).await {
                if l.cut.load(Ordering::SeqCst) {
                    continue;
                }
                if let std::collections::hash_map::Entry::Vacant(slot) = upstream.entry(client) {
                    let Ok(u) = UdpSocket::bind(SocketAddr::new(bind, 0)).await else {
                        continue;
                    };
                    if u.connect(target).await.is_err() {
                        continue;
                    }
                    let u = Arc::new(u);
                    let down = delayed(&mut side_tasks, Out::Down(f.clone(), client));
                    let (u2, l2) = (u.clone(), l.clone());
                    side_tasks.spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        let mut last = Instant::now();
                        while let Ok(n) = u2.recv(&mut buf).await {
                            if !l2.cut.load(Ordering::SeqCst) {
                                last = l2.deadline(last);
                                let _ = down.send((last, buf[..n].to_vec()));
                            }
                        }
                    });
                    slot.insert(delayed(&mut side_tasks, Out::Up(u)));
                }
                if let Some(up) = upstream.get(&client) {
                    last_up = l.deadline(last_up);
                    let _ = up.send((last_up, buf[..n].to_vec()));
                }
            }
        });
        Ok(Relay {
            addr,
            link,
            _tasks: tasks,
        })
    }

    /// Cuts (`true`) or heals (`false`) the link: while cut, nothing gets through either way.
    pub fn cut(&self, cut: bool) {
        self.link.cut.store(cut, Ordering::SeqCst);
    }

    /// Holds every datagram `delay` (plus up to `jitter`, uniformly) in each direction, from
    /// now on; zero for both relays without delay.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        self.link
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
        self.link
            .jitter_ms
            .store(jitter.as_millis() as u64, Ordering::Relaxed);
    }
}
