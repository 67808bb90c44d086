//! Hostile remotes against a live two-node cluster: every bad connection is closed and counted
//! under its reason, and the honest nodes keep exchanging frames afterwards.

#[path = "net_support.rs"]
mod support;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bftd::net::noise::{HANDSHAKE_MESSAGE_BYTES_MAX, Handshake};
use bftd::net::{ClientAccess, NetStats, generate_static_keypair};
use socket2::{Domain, SockAddr, Socket, Type};
use support::{
    Cluster, NoiseClient, PROLOGUE, closed_by_remote, pseudo_random_bytes, raw_frame, wait_until,
};

/// A cluster whose only allowed client key is returned with it.
fn cluster_with_client() -> (Cluster, bftd::net::StaticKeypair) {
    let client_key = generate_static_keypair().unwrap();
    let cluster = Cluster::start(2, ClientAccess::AllowList(vec![client_key.public]));
    cluster.wait_all_linked();
    (cluster, client_key)
}

fn honest_traffic_still_flows(cluster: &Cluster, tag: &str) {
    cluster.deliver(0, 1, format!("{tag}: 0->1").as_bytes());
    cluster.deliver(1, 0, format!("{tag}: 1->0").as_bytes());
}

fn wait_counted(cluster: &Cluster, what: &str, counter: impl Fn(&NetStats) -> u64, at_least: u64) {
    wait_until(what, || counter(&cluster.stats(1)) >= at_least);
}

#[test]
fn random_bytes_are_rejected() {
    let (cluster, _) = cluster_with_client();
    for seed in 1..=5u64 {
        let mut s = TcpStream::connect(cluster.addrs[1]).unwrap();
        // Whatever the first four bytes say, the result is an oversize length or a failed
        // handshake; both close the connection.
        let _ = s.write_all(&pseudo_random_bytes(seed, 5000));
        assert!(closed_by_remote(&mut s), "seed {seed}");
    }
    wait_until("five rejections", || cluster.stats(1).rejected_total() >= 5);
    // A well-sized frame of random bytes is not a valid first handshake message either.
    let mut s = TcpStream::connect(cluster.addrs[1]).unwrap();
    s.write_all(&raw_frame(&pseudo_random_bytes(7, 100)))
        .unwrap();
    assert!(closed_by_remote(&mut s));
    wait_counted(
        &cluster,
        "handshake failed",
        |s| s.rejected_handshake_failed,
        1,
    );
    honest_traffic_still_flows(&cluster, "after random bytes");
}

#[test]
fn oversize_length_prefix_is_rejected_before_and_after_the_handshake() {
    let (cluster, client_key) = cluster_with_client();
    let mut s = TcpStream::connect(cluster.addrs[1]).unwrap();
    let too_long = (HANDSHAKE_MESSAGE_BYTES_MAX as u32 + 1).to_le_bytes();
    s.write_all(&too_long).unwrap();
    assert!(closed_by_remote(&mut s));
    wait_counted(
        &cluster,
        "oversize before handshake",
        |s| s.rejected_oversize_frame,
        1,
    );

    let mut client = NoiseClient::connect(cluster.addrs[1], &client_key).unwrap();
    client.send(b"fine").unwrap();
    client.stream.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(closed_by_remote(&mut client.stream));
    wait_counted(
        &cluster,
        "oversize after handshake",
        |s| s.rejected_oversize_frame,
        2,
    );
    honest_traffic_still_flows(&cluster, "after oversize");
}

#[test]
fn garbage_frame_after_the_handshake_is_rejected() {
    let (cluster, client_key) = cluster_with_client();
    let mut client = NoiseClient::connect(cluster.addrs[1], &client_key).unwrap();
    client.send(b"fine").unwrap();
    client
        .stream
        .write_all(&raw_frame(&pseudo_random_bytes(3, 500)))
        .unwrap();
    assert!(closed_by_remote(&mut client.stream));
    wait_counted(&cluster, "garbage", |s| s.rejected_garbage, 1);
    assert_eq!(cluster.stats(1).client_frames_in, 1);
    honest_traffic_still_flows(&cluster, "after garbage");
}

#[test]
fn half_finished_handshake_times_out() {
    let (cluster, client_key) = cluster_with_client();
    let mut s = TcpStream::connect(cluster.addrs[1]).unwrap();
    let mut hs = Handshake::initiator(&client_key.private, PROLOGUE).unwrap();
    let mut msg1 = Vec::new();
    hs.write_message(&mut msg1).unwrap();
    s.write_all(&msg1).unwrap();
    // Never send the third message: the node answers, then gives up at the timeout.
    assert!(closed_by_remote(&mut s));
    wait_counted(
        &cluster,
        "handshake timeout",
        |s| s.rejected_handshake_timeout,
        1,
    );
    honest_traffic_still_flows(&cluster, "after half handshake");
}

#[test]
fn key_outside_the_allow_list_is_rejected() {
    let (cluster, _) = cluster_with_client();
    let stranger = generate_static_keypair().unwrap();
    let mut client = NoiseClient::connect(cluster.addrs[1], &stranger).unwrap();
    let _ = client.send(b"let me in");
    assert!(closed_by_remote(&mut client.stream));
    wait_counted(&cluster, "unknown key", |s| s.rejected_unknown_key, 1);
    assert_eq!(cluster.stats(1).client_frames_in, 0);
    assert!(cluster.node(1).inbound().is_empty());
    honest_traffic_still_flows(&cluster, "after stranger");
}

#[test]
fn a_node_key_dialling_the_wrong_way_is_rejected() {
    // Node 0 dials node 1, never the reverse; node 1's key calling node 0 is refused.
    let (cluster, _) = cluster_with_client();
    let node1_key = cluster.keys[1].clone();
    let mut impostor = NoiseClient::connect(cluster.addrs[0], &node1_key).unwrap();
    assert!(closed_by_remote(&mut impostor.stream));
    wait_until("wrong direction", || {
        cluster.stats(0).rejected_wrong_direction >= 1
    });
    honest_traffic_still_flows(&cluster, "after wrong direction");
}

#[test]
fn flood_of_connections_is_bounded_and_honest_peers_keep_going() {
    let (cluster, client_key) = cluster_with_client();
    let flood_connections = 200;
    let mut flood: Vec<TcpStream> = (0..flood_connections)
        .map(|_| TcpStream::connect(cluster.addrs[1]).unwrap())
        .collect();
    // Links that were up before the flood are untouched by it.
    honest_traffic_still_flows(&cluster, "during flood");
    for s in &mut flood {
        assert!(closed_by_remote(s));
    }
    wait_until("every flood connection rejected", || {
        let s = cluster.stats(1);
        s.rejected_too_many_connections + s.rejected_handshake_timeout >= flood_connections
    });
    // How many waited out a handshake slot depends on scheduling (a slot freed by a timeout
    // takes the next queued connection); that the cap refused some does not. Node 0's link
    // to node 1 is the one accept that was not part of the flood.
    let s = cluster.stats(1);
    assert!(s.rejected_too_many_connections > 0, "{s:?}");
    assert_eq!(s.connections_accepted, flood_connections + 1, "{s:?}");
    assert_eq!(s.rejected_total(), flood_connections, "{s:?}");
    honest_traffic_still_flows(&cluster, "after flood");
    // And a legitimate client can connect again once the flood is gone.
    let mut client = NoiseClient::connect(cluster.addrs[1], &client_key).unwrap();
    client.send(b"after flood").unwrap();
    let got = cluster
        .node(1)
        .inbound()
        .recv_timeout(support::DEADLINE)
        .unwrap();
    assert_eq!(got.bytes, b"after flood");
}

#[test]
fn a_restarted_peer_gets_back_in_while_clients_fill_connections_max() {
    // connections_max bounds clients and unfinished handshakes; peer links come on top. A peer
    // that lost its link dials in as an unfinished handshake, so a slot must be kept for it.
    let mut limits = support::test_limits();
    limits.connections_max = 2;
    let mut cluster = Cluster::start_with(2, ClientAccess::Any, limits);
    cluster.wait_all_linked();
    let mut clients: Vec<NoiseClient> = (0..2)
        .map(|_| NoiseClient::connect(cluster.addrs[1], &generate_static_keypair().unwrap()))
        .collect::<Result<_, _>>()
        .unwrap();
    for c in &mut clients {
        c.send(b"holding a slot").unwrap();
    }
    wait_until("both clients linked", || {
        cluster.stats(1).client_links_established >= 2
    });
    let addr = cluster.addrs[0];
    cluster.nodes[0].take().unwrap().shutdown();
    wait_until("node 1 notices node 0 is gone", || {
        cluster.stats(1).disconnects >= 1
    });
    cluster.start_node(0, addr);
    cluster.wait_link(1, 0, 2);
    honest_traffic_still_flows(&cluster, "after the peer got back in");
    // The room kept for the peer is not room for a third client.
    let third = NoiseClient::connect(cluster.addrs[1], &generate_static_keypair().unwrap());
    if let Ok(mut third) = third {
        let _ = third.send(b"one too many");
        assert!(closed_by_remote(&mut third.stream));
    }
    wait_counted(
        &cluster,
        "third client refused",
        |s| s.rejected_too_many_connections,
        1,
    );
    assert_eq!(cluster.stats(1).client_links_established, 2);
    drop(clients);
}

/// Half-open connections (connected, nothing sent) from many loopback source addresses
/// (127.0.0.2, 127.0.0.3, ...): an outsider that keeps every handshake slot it can get. A
/// connection the node closes is replaced at once, and each one is replaced by the flood
/// itself before the node's handshake timeout, so slots never sit free waiting for an expiry.
/// Stops by itself after `FLOOD_SECS_MAX`.
struct HandshakeFlood {
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
    /// Connections the node has not closed, as of the last sweep.
    open: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const FLOOD_SECS_MAX: u64 = 120;

impl HandshakeFlood {
    fn start(target: SocketAddr, sources: u8, per_source: usize, refresh: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let (stop2, connects2, open2) = (stop.clone(), connects.clone(), open.clone());
        let thread = std::thread::spawn(move || {
            type Held = (Ipv4Addr, Option<(TcpStream, Instant)>);
            let mut held: Vec<Held> = (0..sources)
                .flat_map(|k| (0..per_source).map(move |_| (Ipv4Addr::new(127, 0, 0, 2 + k), None)))
                .collect();
            let give_up = Instant::now() + Duration::from_secs(FLOOD_SECS_MAX);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < give_up {
                for (source, slot) in &mut held {
                    let stale = slot
                        .as_ref()
                        .is_none_or(|(s, opened)| closed_now(s) || opened.elapsed() >= refresh);
                    if stale {
                        *slot = None; // close first: the new one must find the slot free
                        *slot = half_open_from(*source, target).map(|s| (s, Instant::now()));
                        connects2.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let still_open = held
                    .iter()
                    .filter(|(_, slot)| slot.as_ref().is_some_and(|(s, _)| !closed_now(s)))
                    .count();
                open2.store(still_open as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Self {
            stop,
            connects,
            open,
            thread: Some(thread),
        }
    }

    fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for HandshakeFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP connection to `target` from `source` that never says anything.
fn half_open_from(source: Ipv4Addr, target: SocketAddr) -> Option<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    socket
        .bind(&SockAddr::from(SocketAddr::new(source.into(), 0)))
        .ok()?;
    socket
        .connect_timeout(&SockAddr::from(target), Duration::from_secs(1))
        .ok()?;
    let stream: TcpStream = socket.into();
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

/// True if the remote closed `stream` (EOF or reset); never blocks.
fn closed_now(stream: &TcpStream) -> bool {
    match stream.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// An outsider holds every handshake slot it can from 24 addresses, refreshing each as it
/// expires; the highest node never dials, so when node 0 restarts, only node 1's accept can
/// bring the link back. Members' addresses have their own pool: the link comes back while the
/// flood goes on, and the flood is still refused beyond its share.
#[test]
fn a_restarted_peer_gets_back_in_under_a_continuing_handshake_flood_from_many_addresses() {
    // The daemon's timing: slots held for seconds, and a refused peer backs off to seconds.
    let limits = bftd::net::NetLimits {
        handshake_timeout_ms: 5_000,
        reconnect_backoff_ms_max: 5_000,
        ..support::test_limits()
    };
    let mut cluster = Cluster::start_with(2, ClientAccess::Any, limits.clone());
    cluster.wait_all_linked();
    let sources = 24u8;
    let per_source = limits.handshakes_per_addr_max + 1;
    assert!(usize::from(sources) * per_source > 2 * limits.handshakes_max);
    let refresh = Duration::from_millis(limits.handshake_timeout_ms * 4 / 5);
    let flood = HandshakeFlood::start(cluster.addrs[1], sources, per_source, refresh);
    // Full means refusals keep coming: beyond each address's share and beyond the pool.
    let refused_before = cluster.stats(1).rejected_too_many_connections;
    wait_until("the flood fills node 1's handshake slots", || {
        cluster.stats(1).rejected_too_many_connections >= refused_before + 100
    });
    wait_until("the flood holds a full pool of handshake slots", || {
        flood.open() >= limits.handshakes_max as u64
    });
    wait_until("the flood refreshes its slots", || {
        flood.connects() >= 4 * (usize::from(sources) * per_source) as u64
    });

    let addr = cluster.addrs[0];
    cluster.nodes[0].take().unwrap().shutdown();
    wait_until("node 1 notices node 0 is gone", || {
        cluster.stats(1).disconnects >= 1
    });
    let connects_at_restart = flood.connects();
    cluster.start_node(0, addr);
    cluster.wait_link(1, 0, 2);
    let (s0, s1) = (cluster.stats(0), cluster.stats(1));
    eprintln!(
        "link back after {} dial(s) by node 0; node 1 refused {} and timed out {} handshakes; flood connects {}",
        s0.dials_started,
        s1.rejected_too_many_connections,
        s1.rejected_handshake_timeout,
        flood.connects()
    );
    honest_traffic_still_flows(&cluster, "after the peer got back in under the flood");
    // The flood went on meanwhile (it reconnects whatever the node closes).
    wait_until("the flood keeps reconnecting", || {
        flood.connects() > connects_at_restart + 10
    });
    honest_traffic_still_flows(&cluster, "while the flood goes on");
    drop(flood);
}

/// The first `share` of a sealed application frame carrying `plain_bytes` bytes.
fn partial_frame(client: &mut NoiseClient, plain_bytes: usize, share: f64) -> Vec<u8> {
    let mut sealed = Vec::new();
    client
        .link
        .seal(&pseudo_random_bytes(5, plain_bytes), &mut sealed)
        .unwrap();
    sealed.truncate((sealed.len() as f64 * share) as usize);
    sealed
}

/// A client link accepts the largest valid request, not the peers' frame limit: one byte
/// more is refused at its length prefix, while peers still exchange larger frames.
#[test]
fn a_client_frame_above_the_client_limit_is_refused_and_peers_keep_their_own() {
    let limits = bftd::net::NetLimits {
        client_frame_bytes_max: 64 * 1024,
        ..support::test_limits()
    };
    let client_key = generate_static_keypair().unwrap();
    let cluster = Cluster::start_with(2, ClientAccess::AllowList(vec![client_key.public]), limits);
    cluster.wait_all_linked();
    let mut client = NoiseClient::connect(cluster.addrs[1], &client_key).unwrap();
    client.send(&[1u8; 64 * 1024]).unwrap();
    let got = cluster
        .node(1)
        .inbound()
        .recv_timeout(support::DEADLINE)
        .unwrap();
    assert_eq!(got.bytes.len(), 64 * 1024);
    let header = partial_frame(&mut client, 64 * 1024 + 1, 0.0001);
    client.stream.write_all(&header[..4]).unwrap();
    assert!(closed_by_remote(&mut client.stream));
    wait_counted(
        &cluster,
        "client frame over its limit",
        |s| s.rejected_oversize_frame,
        1,
    );
    cluster.deliver(0, 1, &vec![2u8; 1 << 20]);
}

/// A client that sends half a frame and stalls is closed after `frame_timeout_ms`, and its
/// buffer with it.
#[test]
fn a_frame_that_stalls_midway_is_closed_after_the_frame_timeout() {
    let limits = bftd::net::NetLimits {
        frame_timeout_ms: 300,
        ..support::test_limits()
    };
    let client_key = generate_static_keypair().unwrap();
    let cluster = Cluster::start_with(2, ClientAccess::AllowList(vec![client_key.public]), limits);
    cluster.wait_all_linked();
    let mut client = NoiseClient::connect(cluster.addrs[1], &client_key).unwrap();
    let half = partial_frame(&mut client, 256 * 1024, 0.5);
    client.stream.write_all(&half).unwrap();
    assert!(closed_by_remote(&mut client.stream));
    wait_counted(&cluster, "stalled frame", |s| s.rejected_frame_timeout, 1);
    honest_traffic_still_flows(&cluster, "after a stalled frame");
}

/// Partial client frames together hold at most `client_partial_frames_bytes_max` beyond each
/// one's first 64 KiB: the client whose frame would pass it is closed; small frames from
/// other clients still get through.
#[test]
fn partial_client_frames_are_bounded_in_bytes_across_connections() {
    let limits = bftd::net::NetLimits {
        client_partial_frames_bytes_max: 1 << 20,
        ..support::test_limits()
    };
    let cluster = Cluster::start_with(2, ClientAccess::Any, limits);
    cluster.wait_all_linked();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c =
            NoiseClient::connect(cluster.addrs[1], &generate_static_keypair().unwrap()).unwrap();
        let half = partial_frame(&mut c, 1 << 20, 0.5);
        // The node may close the link mid-write; that is the point.
        let _ = c.stream.write_all(&half);
        held.push(c);
    }
    wait_counted(
        &cluster,
        "over the partial-frame budget",
        |s| s.rejected_memory_budget,
        1,
    );
    let mut small =
        NoiseClient::connect(cluster.addrs[1], &generate_static_keypair().unwrap()).unwrap();
    small.send(b"small frames still pass").unwrap();
    wait_until("the small frame arrives", || {
        cluster
            .node(1)
            .inbound()
            .try_iter()
            .any(|m| m.bytes == b"small frames still pass")
    });
    drop(held);
}
