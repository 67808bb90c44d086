//! Which client connections asked for which request, so the reply goes back to them.
//!
//! A client sends each request to every node, so each node routes a reply to the connection
//! (the client's Noise key) that gave it the request. The table is bounded: beyond
//! `capacity` entries the oldest are forgotten (their clients time out and retry; a retry
//! re-registers the route and gets the cached reply). Each route also keeps when the request
//! first arrived, which is what the commit-latency histogram measures from.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use parking_lot::Mutex;

use super::counters::Counter;
use crate::net::ClientId;
use crate::types::RequestId;

type Key = RequestId;

pub struct ReplyRoutes {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Routes forgotten because the table was full.
    pub evicted: Counter,
}

/// Who waits for one request, and since when.
pub struct Route {
    pub arrived: Instant,
    pub conns: Vec<ClientId>,
}

struct Inner {
    routes: HashMap<Key, Route>,
    order: VecDeque<Key>,
}

/// Connections per request remembered (a client reconnecting and retrying adds one).
const CONNECTIONS_PER_REQUEST_MAX: usize = 4;

impl ReplyRoutes {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                routes: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity: capacity.max(1),
            evicted: Counter::default(),
        }
    }

    pub fn add(&self, key: RequestId, conn: ClientId) {
        let mut g = self.inner.lock();
        match g.routes.get_mut(&key) {
            Some(route) => {
                if !route.conns.contains(&conn) && route.conns.len() < CONNECTIONS_PER_REQUEST_MAX {
                    route.conns.push(conn);
                }
                return;
            }
            None => {
                let route = Route {
                    arrived: Instant::now(),
                    conns: vec![conn],
                };
                g.routes.insert(key, route);
                g.order.push_back(key);
            }
        }
        while g.routes.len() > self.capacity {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if g.routes.remove(&old).is_some() {
                self.evicted.bump();
            }
        }
        // `order` may hold keys already taken; keep it from growing without bound.
        if g.order.len() > self.capacity * 2 {
            let Inner { routes, order } = &mut *g;
            order.retain(|k| routes.contains_key(k));
        }
    }

    /// The connections waiting for request `id`, forgetting them.
    pub fn take(&self, id: &RequestId) -> Vec<ClientId> {
        self.take_route(id).map(|r| r.conns).unwrap_or_default()
    }

    /// The route of request `id` with its arrival time, forgetting it.
    pub fn take_route(&self, id: &RequestId) -> Option<Route> {
        self.inner.lock().routes.remove(id)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ClientKey;

    fn id(session: u64, seq: u64) -> RequestId {
        RequestId {
            client: ClientKey([1; 32]),
            session,
            seq,
        }
    }

    #[test]
    fn routes_are_taken_once_and_bounded() {
        let r = ReplyRoutes::new(2);
        let b = ClientId([9; 32], 1);
        r.add(id(3, 1), b);
        r.add(id(3, 1), b);
        assert!(r.take(&id(4, 1)).is_empty(), "another session's seq 1");
        assert_eq!(r.take(&id(3, 1)), vec![b]);
        assert!(r.take(&id(3, 1)).is_empty());
        for seq in 0..10 {
            r.add(id(3, seq), b);
        }
        assert_eq!(r.len(), 2);
        assert_eq!(r.evicted.get(), 8);
        assert_eq!(r.take(&id(3, 9)), vec![b], "the newest survive");
        assert!(r.take(&id(3, 0)).is_empty(), "the oldest were forgotten");
    }
}
