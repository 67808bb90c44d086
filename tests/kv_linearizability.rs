//! A linearizability checker for histories of single-key operations on a versioned
//! key-value register (bftd's put / get / compare-version-and-put), after Wing & Gong with
//! Lowe's memoisation (the algorithm Porcupine and Knossos use).
//!
//! A history is a list of [`Operation`]s, each with its invoke and return times (monotonic
//! nanoseconds) and its outcome. Every operation touches one key, so the history is checked
//! key by key (linearizability is local: a history is linearizable iff each per-key
//! sub-history is). Per key, the search walks the call/return events in time order, tries to
//! linearize each pending call against the model, backtracks on a return whose call could not
//! be placed, and memoises (set of linearized ops, model state) so no configuration is explored
//! twice.
//!
//! Outcomes: `Ok(output)` must match the model exactly; `Unknown` (a timeout: it may or may
//! not have taken effect) gets a return time of infinity and matches any output, so it can
//! take effect at any point after its invoke, or, placed after every completed operation, in
//! effect never. Operations that clearly failed (a refusal) must be left out of the history by
//! the caller; a read with an unknown outcome observes nothing and may be left out too.
//!
//! Model: a missing key has version 0; a put sets the value and increments the version; a
//! CAS compares the version and, if equal, puts. Values are assumed unique per write, which
//! keeps the reachable states few and the search fast.
//!
//! Included by test files with `#[path]`; compiled alone it holds no tests.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};

/// A key's state: its value (absent = `None`) and version (0 when absent).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct State {
    pub value: Option<Vec<u8>>,
    pub version: u64,
}

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Put {
        value: Vec<u8>,
    },
    Get,
    /// If the version equals `expect_version`, put `value`; else read.
    Cas {
        expect_version: u64,
        value: Vec<u8>,
    },
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Put { version: u64 },
    Get { found: Option<(Vec<u8>, u64)> },
    CasSwapped { version: u64 },
    CasFailed { found: Option<(Vec<u8>, u64)> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(Output),
    /// Timed out: may or may not have taken effect.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub client: usize,
    pub key: Vec<u8>,
    pub input: Input,
    pub outcome: Outcome,
    pub invoke_ns: u64,
    /// Ignored for `Unknown` outcomes (treated as infinity).
    pub return_ns: u64,
}

/// Applies `input` to `state`: the new state and the output the model produces.
pub fn step(state: &State, input: &Input) -> (State, Output) {
    let found = state.value.clone().map(|v| (v, state.version));
    match input {
        Input::Put { value } => put(state, value, |version| Output::Put { version }),
        Input::Get => (state.clone(), Output::Get { found }),
        Input::Cas {
            expect_version,
            value,
        } if *expect_version == state.version => {
            put(state, value, |version| Output::CasSwapped { version })
        }
        Input::Cas { .. } => (state.clone(), Output::CasFailed { found }),
    }
}

fn put(state: &State, value: &[u8], out: impl Fn(u64) -> Output) -> (State, Output) {
    let next = State {
        value: Some(value.to_vec()),
        version: state.version + 1,
    };
    let version = next.version;
    (next, out(version))
}

/// Why a key's history is not linearizable.
#[derive(Debug)]
pub struct Violation {
    pub key: Vec<u8>,
    /// The key's operations in invoke order, for the failure message.
    pub ops: Vec<Operation>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "history of key {:?} is not linearizable ({} ops):",
            String::from_utf8_lossy(&self.key),
            self.ops.len()
        )?;
        for op in &self.ops {
            writeln!(
                f,
                "  client {} [{} .. {}] {:?} -> {:?}",
                op.client, op.invoke_ns, op.return_ns, op.input, op.outcome
            )?;
        }
        Ok(())
    }
}

/// Checks every key's sub-history; the first violation found, if any.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&[u8], Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|o| o.invoke_ns);
        if !check_key(&ops) {
            return Err(Violation {
                key: key.to_vec(),
                ops,
            });
        }
    }
    Ok(())
}

/// One call or return event of operation `op`.
#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    is_call: bool,
}

/// The event list, in time order. Returns of unknown outcomes go last (infinity); at equal
/// times calls come before returns (touching intervals overlap, the permissive reading).
fn events(ops: &[Operation]) -> Vec<Event> {
    let ret = |o: &Operation| match o.outcome {
        Outcome::Unknown => u64::MAX,
        Outcome::Ok(_) => o.return_ns.max(o.invoke_ns),
    };
    let mut timed: Vec<(u64, bool, Event)> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        timed.push((
            o.invoke_ns,
            false,
            Event {
                op: i,
                is_call: true,
            },
        ));
        timed.push((
            ret(o),
            true,
            Event {
                op: i,
                is_call: false,
            },
        ));
    }
    timed.sort_by_key(|&(t, is_return, e)| (t, is_return, e.op));
    timed.into_iter().map(|(_, _, e)| e).collect()
}

/// A doubly linked list over the events, so linearized ops can be lifted out and put back.
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Position of each op's call and return event.
    call_at: Vec<usize>,
    return_at: Vec<usize>,
}

/// Sentinel head node index (the event list occupies 1..=len).
const HEAD: usize = 0;
const NIL: usize = usize::MAX;

impl Links {
    fn new(evs: &[Event], op_count: usize) -> Self {
        let len = evs.len();
        let mut l = Links {
            next: (0..=len)
                .map(|i| if i < len { i + 1 } else { NIL })
                .collect(),
            prev: (0..=len).map(|i| i.wrapping_sub(1)).collect(),
            call_at: vec![0; op_count],
            return_at: vec![0; op_count],
        };
        l.prev[HEAD] = NIL;
        for (i, e) in evs.iter().enumerate() {
            if e.is_call {
                l.call_at[e.op] = i + 1;
            } else {
                l.return_at[e.op] = i + 1;
            }
        }
        l
    }

    fn unlink(&mut self, at: usize) {
        let (p, n) = (self.prev[at], self.next[at]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Undoes `unlink(at)`; valid in reverse order of unlinking.
    fn relink(&mut self, at: usize) {
        let (p, n) = (self.prev[at], self.next[at]);
        self.next[p] = at;
        if n != NIL {
            self.prev[n] = at;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_at[op]);
        self.unlink(self.return_at[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.return_at[op]);
        self.relink(self.call_at[op]);
    }
}

fn accepts(op: &Operation, produced: &Output) -> bool {
    match &op.outcome {
        Outcome::Unknown => true,
        Outcome::Ok(out) => out == produced,
    }
}

/// Wing & Gong / Lowe search over one key's operations.
pub fn check_key(ops: &[Operation]) -> bool {
    let evs = events(ops);
    let mut links = Links::new(&evs, ops.len());
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut memo: HashSet<(Vec<u64>, State)> = HashSet::new();
    // (op, state before it) for each op linearized so far, in order.
    let mut stack: Vec<(usize, State)> = Vec::with_capacity(ops.len());
    let mut state = State::default();
    let mut entry = links.next[HEAD];
    while links.next[HEAD] != NIL {
        // Every call still listed has its return later in the list, where the walk stops.
        assert!(
            entry != NIL,
            "walked past the last event without meeting a return"
        );
        let ev = evs[entry - 1];
        if ev.is_call {
            let op = &ops[ev.op];
            let (next_state, produced) = step(&state, &op.input);
            let mut bits = linearized.clone();
            bits[ev.op / 64] |= 1 << (ev.op % 64);
            if accepts(op, &produced) && memo.insert((bits.clone(), next_state.clone())) {
                stack.push((ev.op, std::mem::replace(&mut state, next_state)));
                linearized = bits;
                links.lift(ev.op);
                entry = links.next[HEAD];
            } else {
                entry = links.next[entry];
            }
        } else {
            // A return whose call is not linearized: undo the last choice.
            let Some((op, before)) = stack.pop() else {
                return false;
            };
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            links.unlift(op);
            entry = links.next[links.call_at[op]];
        }
    }
    true
}
