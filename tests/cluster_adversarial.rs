//! Hostile remotes and failing members against real `bftd` processes on 127.0.0.1.
//!
//! Each test runs an honest client (every request to every node, done once `f + 1` nodes
//! give identical replies) while something bad happens, and checks what the issue asks:
//! the attacked process is still running, honest requests keep committing during and after,
//! every live node ends on the same state digest, and the attacked node's resident memory
//! grew by less than [`RSS_GROWTH_KIB_MAX`].
//!
//! Peers and clients share one listening port, so "the peer port" and "the client port" are
//! the same socket; the peer side is covered by handshakes that only a peer could finish
//! (a member's key dialling the wrong way), by keys that are neither peer nor client, and by
//! an allowed client sending peer frames.
//!
//! The tests take a lock so clusters never run side by side (see `adversarial::serial`).

#[path = "adversarial_support.rs"]
mod adversarial;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use adversarial::support::*;
use adversarial::*;
use bftd::config::LoadedClientConfig;
use bftd::crypto::Signer;
use bftd::net::noise::{HANDSHAKE_MESSAGE_BYTES_MAX, sealed_len};
use bftd::wire::peer::encode_peer;
use bftd::wire::{ClientFrame, NodeFrame, PeerFrame, Refusal, StateMsg};

/// How much the attacked node's RSS may grow over an attack. What the attacks may pin is far
/// smaller: unfinished handshakes cost at most `handshakes_max` x 1 KiB of frame buffer, the one
/// allowed attacker key holds one link with at most one partial frame (we send 1 MiB of it),
/// and garbage frames (1 MiB each) are dropped by the verifier as they come. The rest of the
/// margin is for the honest writes (a few thousand small keys in the memtable and block store)
/// and the allocator keeping freed arenas. A per-connection leak over the thousands of attack
/// connections, or a buffer sized by an attacker's length prefix (up to 4 GiB), would not fit.
const RSS_GROWTH_KIB_MAX: u64 = 64 * 1024;

/// View changes in a few hundred milliseconds, so a silent leader costs little. Still, with a
/// dead leader in the rotation a commit waits for enough live leaders in a row, and the
/// honest load sends one request at a time: about one request commits per rotation, so the
/// tests ask for a handful of commits while a node is down, not for throughput.
const CONSENSUS: &str = "round_timeout_base_ms = 300";

fn start_all(net: &Testnet) -> Vec<NodeProc> {
    let procs: Vec<NodeProc> = (0..net.nodes).map(|i| NodeProc::start(net, i)).collect();
    wait_for("every node answers status", DEADLINE, || {
        (0..net.nodes).all(|i| status_of(net, i).is_some())
    });
    procs
}

fn assert_alive(p: &mut NodeProc, net: &Testnet) {
    if let Ok(Some(status)) = p.child.try_wait() {
        dump_logs(net);
        panic!("node {} exited during the attack: {status}", p.index);
    }
}

fn assert_rss_bounded(node: usize, before_kib: u64, after_kib: u64) {
    eprintln!("node {node}: RSS {before_kib} KiB before the attack, {after_kib} KiB after");
    assert!(before_kib > 0 && after_kib > 0, "RSS readable");
    assert!(
        after_kib < before_kib + RSS_GROWTH_KIB_MAX,
        "node {node}: RSS grew from {before_kib} KiB to {after_kib} KiB"
    );
}

// ---------------------------------------------------------------------------------------------
// Attackers: each runs rounds until stopped, counting rounds and collecting what went wrong.

#[derive(Clone)]
struct Attack {
    addr: SocketAddr,
    prologue: Vec<u8>,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Attack {
    fn new(addr: SocketAddr, prologue: Vec<u8>) -> Self {
        Self {
            addr,
            prologue,
            stop: Arc::new(AtomicBool::new(false)),
            rounds: Arc::new(AtomicU64::new(0)),
            failures: Default::default(),
        }
    }

    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    /// Records a failure unless the node closed `s`.
    fn expect_closed(&self, s: &mut std::net::TcpStream, what: &str) {
        if !closed_by_remote(s) {
            self.fail(format!("{what}: the node kept the connection open"));
        }
    }

    fn spawn(
        &self,
        mut round: impl FnMut(&Attack, u64) + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !me.stop.load(Ordering::Relaxed) {
                round(&me, n);
                n += 1;
                me.rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    }
}

/// Bytes before any handshake: random, oversize prefixes, a bad first message, garbage
/// instead of the last message, a key nobody knows, and a member's key dialling the wrong
/// way (the higher id never dials the lower one).
fn junk_round(a: &Attack, n: u64, wrong_way_secret: [u8; 32]) {
    let mut s = connect(a.addr);
    let _ = s.write_all(&pseudo_random_bytes(n + 1, 5000));
    a.expect_closed(&mut s, &format!("random bytes, seed {}", n + 1));

    for len in [u32::MAX, HANDSHAKE_MESSAGE_BYTES_MAX as u32 + 1] {
        let mut s = connect(a.addr);
        let _ = s.write_all(&len.to_le_bytes());
        a.expect_closed(&mut s, &format!("length prefix {len} before the handshake"));
    }

    let mut s = connect(a.addr);
    let _ = s.write_all(&frame(&pseudo_random_bytes(n + 100, 100)));
    a.expect_closed(&mut s, "a random first handshake message");

    if let Some(mut started) = start_handshake(a.addr, &stranger_secret(), &a.prologue) {
        let _ = started
            .stream
            .write_all(&frame(&pseudo_random_bytes(n + 200, 64)));
        a.expect_closed(&mut started.stream, "garbage as the last handshake message");
    } else {
        a.fail("the node refused a first handshake message".into());
    }

    for (what, secret) in [
        ("a key that is neither peer nor client", stranger_secret()),
        ("a member key dialling the wrong way", wrong_way_secret),
    ] {
        match start_handshake(a.addr, &secret, &a.prologue).and_then(|s| s.finish()) {
            Some(mut link) => {
                // The node only learns the key from our last message; it must close now and
                // never answer.
                if let Ok(reply) = link.status(1) {
                    a.fail(format!("{what}: the node answered {reply:?}"));
                }
                a.expect_closed(&mut link.stream, what);
            }
            None => a.fail(format!("{what}: the node refused the first message")),
        }
    }
}

/// Half-finished handshakes held open: after the first message, after two bytes of a
/// length prefix, and with nothing sent. The node must close each at its handshake timeout.
fn half_round(a: &Attack) {
    let mut held = Vec::new();
    for _ in 0..8 {
        match start_handshake(a.addr, &stranger_secret(), &a.prologue) {
            Some(started) => held.push(("after the first message", started.stream)),
            None => a.fail("the node refused a first handshake message".into()),
        }
    }
    for _ in 0..4 {
        let mut s = connect(a.addr);
        let _ = s.write_all(&[0x20, 0x00]);
        held.push(("two bytes of a length prefix", s));
        held.push(("nothing at all", connect(a.addr)));
    }
    for (what, mut s) in held {
        a.expect_closed(&mut s, &format!("half-finished handshake ({what})"));
    }
}

/// An allowed client turned hostile: peer frames, garbage, bad and unauthorised requests,
/// big garbage frames, a truncated huge frame, and an oversize prefix after the handshake.
/// Frames that do not decode are dropped without closing the link, which must still be served.
fn client_round(a: &Attack, n: u64, cfg: &LoadedClientConfig) {
    let Some(mut link) = client_link(cfg, a.addr) else {
        return a.fail("the allowed attacker key could not connect".into());
    };
    let peer_frames = [
        PeerFrame::State(StateMsg::OfferRequest),
        PeerFrame::State(StateMsg::ChunkRequest {
            height: u64::MAX,
            offset: u64::MAX,
            len: u32::MAX,
        }),
    ];
    for f in &peer_frames {
        let _ = link.send_plain(&encode_peer(f));
    }
    let _ = link.send_plain(&pseudo_random_bytes(n + 300, 500));
    let _ = link.send_plain(&[]);
    expect_refusal(a, &mut link, badly_signed(cfg, 1), Refusal::Invalid);
    let outsider = Signer::new([7u8; 32], cfg.cluster);
    let mut unauthorised = signed_request(cfg, 2, &[put("evil", "x")]);
    unauthorised.client = bftd::types::ClientKey(outsider.public_key());
    unauthorised.signature = outsider.sign(
        bftd::crypto::domain::REQUEST,
        &bftd::crypto::domain::request_body(
            &unauthorised.client,
            unauthorised.session,
            2,
            &unauthorised.ops,
        ),
    );
    expect_refusal(a, &mut link, unauthorised, Refusal::NotAuthorised);
    // Garbage as large as a client link takes (the largest valid request, 1 MiB of ops):
    // dropped by the verifier, the link kept.
    for k in 0..4 {
        let _ = link.send_plain(&pseudo_random_bytes(n * 10 + k, 1 << 20));
    }
    if let Err(e) = link.status(n + 10) {
        a.fail(format!(
            "the attacker's link died after garbage frames: {e}"
        ));
    }
    // A huge frame announced, 1 MiB of it sent, then the link dropped.
    let _ = link
        .stream
        .write_all(&(sealed_len(8 << 20) as u32).to_le_bytes());
    let _ = link
        .stream
        .write_all(&pseudo_random_bytes(n + 400, 1 << 20));
    drop(link);

    let Some(mut link) = client_link(cfg, a.addr) else {
        return a.fail("the allowed attacker key could not reconnect".into());
    };
    let _ = link.stream.write_all(&u32::MAX.to_le_bytes());
    a.expect_closed(
        &mut link.stream,
        "length prefix u32::MAX after the handshake",
    );
}

fn expect_refusal(a: &Attack, link: &mut Link, req: bftd::types::ClientRequest, want: Refusal) {
    let seq = req.seq;
    if let Err(e) = link.send(&ClientFrame::Submit(req)) {
        return a.fail(format!("send request {seq}: {e}"));
    }
    loop {
        match link.recv() {
            Ok(NodeFrame::Refused { seq: s, reason, .. }) if s == seq => {
                if reason != want {
                    a.fail(format!(
                        "request {seq}: refused as {reason:?}, not {want:?}"
                    ));
                }
                return;
            }
            Ok(NodeFrame::Reply { seq: s, .. }) if s == seq => {
                return a.fail(format!("request {seq} was executed"));
            }
            Ok(_) => {}
            Err(e) => return a.fail(format!("waiting for the refusal of {seq}: {e}")),
        }
    }
}

/// Runs every attacker against node `target` until each did `rounds_min` rounds and the
/// honest load committed `commits_min` more requests; returns the attack's wall time.
fn attack_node(
    net: &Testnet,
    load: &HonestLoad,
    target: usize,
    attacker: &LoadedClientConfig,
) -> Duration {
    let start = Instant::now();
    let prologue = attacker.cluster.0.to_vec();
    let attacks: Vec<Attack> = (0..3)
        .map(|_| Attack::new(net.addr(target), prologue.clone()))
        .collect();
    // Member keys: the node with the higher id never dials; the highest gets its own key.
    let wrong_way = node_noise_secret(net, (target + 1).min(net.nodes - 1));
    let cfg = attacker.clone();
    let threads = [
        attacks[0].spawn(move |a, n| junk_round(a, n, wrong_way)),
        attacks[1].spawn(|a, _| half_round(a)),
        attacks[2].spawn(move |a, n| client_round(a, n, &cfg)),
    ];
    load.wait_more(10, &format!("while node {target} is attacked"));
    wait_for("two rounds of every attack", DEADLINE, || {
        attacks
            .iter()
            .all(|a| a.rounds.load(Ordering::Relaxed) >= 2)
    });
    for a in &attacks {
        a.stop.store(true, Ordering::Relaxed);
    }
    for t in threads {
        t.join().expect("attacker thread");
    }
    let failures: Vec<String> = attacks
        .iter()
        .flat_map(|a| a.failures.lock().unwrap().clone())
        .collect();
    assert!(failures.is_empty(), "node {target}: {failures:#?}");
    start.elapsed()
}

/// The list — random bytes, oversize length prefixes, half-finished handshakes, keys
/// not in the config, garbage after a started and after a completed handshake — against each
/// node in turn (so every leader rotation meets an attacked node), under honest load.
#[test]
fn hostile_input_to_each_node_leaves_it_up_committing_and_bounded() {
    let _serial = serial();
    let start = Instant::now();
    let net = Testnet::new(4, CONSENSUS, "");
    set_limits(&net, "handshake_timeout_ms = 1000");
    let [attacker, observer]: [LoadedClientConfig; 2] =
        add_clients(&net, &["attacker", "observer"])
            .try_into()
            .expect("two clients");
    let mut procs = start_all(&net);
    let load = HonestLoad::start(&net);
    load.wait_more(5, "before any attack");
    for (target, proc) in procs.iter_mut().enumerate() {
        let before_kib = proc.rss_kib();
        let took = attack_node(&net, &load, target, &attacker);
        assert_alive(proc, &net);
        let after_kib = proc.rss_kib();
        eprintln!("node {target}: attacked for {took:?}");
        assert_rss_bounded(target, before_kib, after_kib);
    }
    load.wait_more(10, "after the attacks");
    for i in 0..net.nodes {
        assert_eq!(
            load.reconnects(i),
            0,
            "the honest client's link to node {i} broke"
        );
        assert!(load.replies(i) > 0, "node {i} answered the honest client");
    }
    let committed = load.finish();
    let all = [0, 1, 2, 3];
    let agreed = wait_converged(
        &net,
        &observer,
        &all,
        highest_applied(&net, &observer, &all),
    );
    eprintln!(
        "{committed} honest requests committed, all at height {} ({:?} in all)",
        agreed.applied_height,
        start.elapsed()
    );
}

/// Limits low enough for a test to exceed: at most 8 unfinished inbound handshakes and 16
/// connections other than peer links; an unfinished handshake dies after 2 s.
const FLOOD_LIMITS: &str = "connections_max = 16\nhandshakes_max = 8\nhandshake_timeout_ms = 2000";
const CONNECTIONS_MAX: usize = 16;
const FLOOD_CONNECTIONS: usize = 300;
const FLOOD_CLIENTS: usize = 24;

/// Opens `FLOOD_CONNECTIONS` connections to `addr`, each sending a first handshake message,
/// and holds them all; returns how many the node answered (took into a handshake slot).
fn handshake_flood(addr: SocketAddr, prologue: &[u8], load: &HonestLoad) -> usize {
    let secret = stranger_secret();
    let mut held = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let mut s = connect(addr);
        let mut hs = bftd::net::noise::Handshake::initiator(&secret, prologue).expect("hs");
        let mut msg1 = Vec::new();
        hs.write_message(&mut msg1).expect("msg1");
        let _ = s.write_all(&msg1);
        held.push(s);
    }
    load.wait_more(10, "while the handshake flood is held");
    // Answered or not, the node must close every one: at once when over the limit, at the
    // handshake timeout otherwise (a queued answer is still read before the close).
    let mut answered = 0;
    for (k, mut s) in held.into_iter().enumerate() {
        answered += usize::from(read_handshake_frame(&mut s).is_some());
        assert!(closed_by_remote(&mut s), "flood connection {k} left open");
    }
    answered
}

/// A flood beyond `handshakes_max` (unauthenticated) and beyond `connections_max` (allowed
/// client keys) against node 3, which only accepts peer links: the honest client, whose links
/// predate the flood, keeps committing; the node refuses what is over the limits, closes
/// everything it took, serves new clients once the flood is gone, and stays bounded.
#[test]
fn connection_flood_beyond_the_limits_is_refused_and_honest_clients_keep_committing() {
    let _serial = serial();
    let start = Instant::now();
    let net = Testnet::new(4, CONSENSUS, "");
    set_limits(&net, FLOOD_LIMITS);
    let observer = add_client(&net, "observer");
    let names: Vec<String> = (0..FLOOD_CLIENTS).map(|k| format!("flood{k}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let flooders = add_clients(&net, &names);
    let mut procs = start_all(&net);
    let target = 3;
    let load = HonestLoad::start(&net);
    load.wait_more(5, "before the flood");
    let before_kib = procs[target].rss_kib();

    let prologue = flooders[0].cluster.0.to_vec();
    let answered = handshake_flood(net.addr(target), &prologue, &load);
    eprintln!("handshake flood: {answered} of {FLOOD_CONNECTIONS} answered, the rest refused");
    assert!(answered > 0, "the node took no handshake at all");
    assert!(
        answered < FLOOD_CONNECTIONS,
        "handshakes_max refused nothing"
    );

    // Allowed clients up to connections_max; the honest client already holds one.
    let mut links: Vec<Link> = flooders
        .iter()
        .filter_map(|cfg| client_link(cfg, net.addr(target)))
        .filter_map(|mut l| l.status(1).is_ok().then_some(l))
        .collect();
    eprintln!(
        "client flood: {} of {FLOOD_CLIENTS} links served",
        links.len()
    );
    assert!(
        links.len() < CONNECTIONS_MAX,
        "connections_max = {CONNECTIONS_MAX} let the honest link and {} more in",
        links.len()
    );
    assert!(!links.is_empty(), "the node took no client at all");
    load.wait_more(10, "while connections_max is reached");
    assert_alive(&mut procs[target], &net);
    for l in &mut links {
        l.status(2)
            .expect("a link taken under the limit is still served");
    }

    // Peer links come on top of connections_max: a restarted peer gets back in while the
    // clients fill every other slot.
    procs.remove(0).kill();
    procs.insert(0, NodeProc::start(&net, 0));
    let held = &mut links[0];
    let mut id = 10;
    wait_for("node 0 links to node 3 again", DEADLINE, || {
        id += 1;
        held.status(id)
            .expect("status over a held link")
            .peers_connected
            == 3
            && observe(&net, &observer, 0).is_some_and(|s| s.peers_connected == 3)
    });
    drop(links);

    let after_kib = procs[target].rss_kib();
    assert_rss_bounded(target, before_kib, after_kib);
    wait_for("a new client is served after the flood", DEADLINE, || {
        observe(&net, &observer, target).is_some()
    });
    load.wait_more(10, "after the flood");
    assert_eq!(load.reconnects(target), 0, "the honest link broke");
    load.finish();
    let all = [0, 1, 2, 3];
    wait_converged(
        &net,
        &observer,
        &all,
        highest_applied(&net, &observer, &all),
    );
    eprintln!("flood test took {:?}", start.elapsed());
}

/// Waits until the round of every node in `live` passed `round_min`; returns the lowest round.
fn wait_rounds(net: &Testnet, observer: &LoadedClientConfig, live: &[usize], round_min: u64) {
    wait_for(
        &format!("nodes {live:?} past round {round_min}"),
        DEADLINE,
        || {
            live.iter()
                .all(|&i| observe(net, observer, i).is_some_and(|s| s.round >= round_min))
        },
    );
}

/// The current leader frozen with SIGSTOP while the honest load runs: the others time it out
/// round after round and keep committing; after SIGCONT it catches up to the same state.
#[test]
fn a_stopped_leader_is_routed_around_and_catches_up_after_sigcont() {
    let _serial = serial();
    let start = Instant::now();
    let net = Testnet::new(4, CONSENSUS, "");
    let observer = add_client(&net, "observer");
    let mut procs = start_all(&net);
    let load = HonestLoad::start(&net);
    load.wait_more(5, "before the stop");
    let status = observe(&net, &observer, 0).expect("node 0 answers");
    let target = usize::from(status.leader);
    let live: Vec<usize> = (0..net.nodes).filter(|&i| i != target).collect();

    procs[target].signal("STOP");
    let stopped_at = Instant::now();
    // Leaders rotate every round: 12 rounds give the stopped node at least two turns to miss,
    // each costing the others a round timeout.
    wait_rounds(&net, &observer, &live, status.round + 12);
    load.wait_more(8, &format!("while node {target} is stopped"));
    let height = highest_applied(&net, &observer, &live);
    let stopped_for = stopped_at.elapsed();
    let replies = load.replies(target);
    procs[target].signal("CONT");

    assert_alive(&mut procs[target], &net);
    wait_for(
        &format!("node {target} answers the honest client again"),
        DEADLINE,
        || load.replies(target) > replies,
    );
    load.wait_more(5, "after SIGCONT");
    let committed = load.finish();
    let all: Vec<usize> = (0..net.nodes).collect();
    let agreed = wait_converged(&net, &observer, &all, height);
    eprintln!(
        "node {target} stopped for {stopped_for:?} (the others reached height {height}); \
         {committed} requests committed, all nodes at height {} ({:?} in all)",
        agreed.applied_height,
        start.elapsed()
    );
}

/// Seven members tolerate two faults: with two processes SIGKILLed the other five keep
/// committing and agree.
#[test]
fn seven_nodes_keep_committing_with_two_killed() {
    let _serial = serial();
    let start = Instant::now();
    let net = Testnet::new(7, CONSENSUS, "");
    let observer = add_client(&net, "observer");
    let mut procs: Vec<Option<NodeProc>> = start_all(&net).into_iter().map(Some).collect();
    let load = HonestLoad::start(&net);
    load.wait_more(5, "with all seven up");
    let killed = [2, 5];
    for i in killed {
        procs[i].take().expect("running").kill();
    }
    let live: Vec<usize> = (0..net.nodes).filter(|i| !killed.contains(i)).collect();
    let round = observe(&net, &observer, live[0])
        .expect("a live node")
        .round;
    wait_rounds(&net, &observer, &live, round + 14);
    load.wait_more(8, "with nodes 2 and 5 dead");
    for p in procs.iter_mut().flatten() {
        assert_alive(p, &net);
    }
    let committed = load.finish();
    let agreed = wait_converged(
        &net,
        &observer,
        &live,
        highest_applied(&net, &observer, &live),
    );
    eprintln!(
        "{committed} requests committed; the five live nodes at height {} ({:?} in all)",
        agreed.applied_height,
        start.elapsed()
    );
}

/// Client connections that each stall halfway through the largest frame a client link takes.
const STALLED_CLIENTS: usize = 1000;
/// What those may add to the node's peak resident memory: the bound.
const STALLED_RSS_GROWTH_KIB_MAX: u64 = 256 * 1024;

/// Opens the node configs to any client key (the stalled connections use fresh keys).
fn allow_any_client(net: &Testnet) {
    for i in 0..net.nodes {
        let path = net.config(i);
        let text = std::fs::read_to_string(&path).expect("read node config");
        let start = text.find("[clients]\nallow = [\n").expect("an allow-list");
        let end = start + text[start..].find("\n]\n").expect("end of the allow-list") + 3;
        let edited = format!(
            "{}[clients]\nallow = \"any\"\n{}",
            &text[..start],
            &text[end..]
        );
        std::fs::write(&path, edited).expect("write node config");
    }
}

/// The process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(p: &NodeProc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The soft limit on open files of this process (the node inherits it).
fn open_files_soft_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Memory is bounded in bytes, not in frames: 1,000 client connections each send half of the
/// largest frame a client link accepts (the largest valid request, about 1 MiB) and stall,
/// which would pin about 512 MiB if every partial frame were kept. The node's peak RSS grows
/// by less than 256 MiB, it refuses what is over its partial-frame budget, and the honest
/// client keeps committing throughout.
#[test]
fn a_thousand_clients_stalled_mid_frame_stay_within_256_mib_and_honest_clients_commit() {
    let _serial = serial();
    // Each stalled link costs one fd here and one in the node, which inherits our limit.
    let fds_needed = 2 * STALLED_CLIENTS as u64 + 512;
    assert!(
        open_files_soft_limit() >= fds_needed,
        "this test needs a soft RLIMIT_NOFILE of at least {fds_needed} (ulimit -n)"
    );
    let start = Instant::now();
    let net = Testnet::new(4, CONSENSUS, "");
    allow_any_client(&net);
    // Room for every stalled link, and a frame timeout far beyond the test: the byte budget,
    // not the timeout, is what bounds memory here.
    set_limits(&net, "connections_max = 1200\nframe_timeout_ms = 600000");
    let mut procs = start_all(&net);
    let target = 3;
    let load = HonestLoad::start(&net);
    load.wait_more(5, "before the stalled frames");
    let before_kib = procs[target].rss_kib();

    let prologue = honest_client(&net).cluster.0.to_vec();
    let frame_bytes = bftd::wire::client::submit_frame_bytes_max(1 << 20);
    let payload = pseudo_random_bytes(9, frame_bytes);
    let mut links = Vec::with_capacity(STALLED_CLIENTS);
    for _ in 0..STALLED_CLIENTS {
        let Some(mut link) = start_handshake(net.addr(target), &stranger_secret(), &prologue)
            .and_then(Started::finish)
        else {
            continue;
        };
        let mut sealed = Vec::new();
        link.link.seal(&payload, &mut sealed).expect("seal");
        link.stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .expect("write timeout");
        // The node may close a link over its budget while we write: that is the refusal.
        let _ = link.stream.write_all(&sealed[..sealed.len() / 2]);
        links.push(link);
    }
    eprintln!(
        "{} stalled links sent half of a {frame_bytes}-byte frame",
        links.len()
    );
    assert!(
        links.len() >= STALLED_CLIENTS * 9 / 10,
        "too few links to test anything"
    );
    load.wait_more(10, "while the stalled frames are held");
    assert_alive(&mut procs[target], &net);
    let refused = links
        .iter()
        .filter(|l| {
            l.stream.set_nonblocking(true).is_ok()
                && !matches!(l.stream.peek(&mut [0u8; 1]), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    eprintln!("{refused} of the stalled links were closed by the node (over its byte budget)");
    assert!(refused > 0, "the partial-frame budget refused nothing");

    let peak_kib = peak_rss_kib(&procs[target]);
    eprintln!(
        "node {target}: RSS {before_kib} KiB before, peak {peak_kib} KiB with the stalled frames"
    );
    assert!(before_kib > 0 && peak_kib > 0, "RSS readable");
    assert!(
        peak_kib < before_kib + STALLED_RSS_GROWTH_KIB_MAX,
        "node {target}: peak RSS {peak_kib} KiB, {before_kib} KiB before the stalled frames"
    );
    drop(links);
    load.wait_more(5, "after the stalled links are gone");
    assert_eq!(load.reconnects(target), 0, "the honest link broke");
    load.finish();
    eprintln!("stalled-frames test took {:?}", start.elapsed());
}
