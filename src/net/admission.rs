//! Admission of unauthenticated inbound connections: who may hold a handshake slot.
//!
//! A remote is known only once its handshake finishes, so the one fact available at accept is
//! the TCP source address, which a remote cannot forge (it must complete the TCP handshake from
//! it). Slots come from two pools of `handshakes_max` each:
//!
//! - **members' addresses**: the IPs of the configured peers. A peer that lost its link dials
//!   from its own host, so an outsider flooding from anywhere else can never take its room
//!   (the highest id never dials, so it depends on this to get every link back). There is no
//!   per-address cap here: on a single-host cluster every client shares the members' IP.
//! - **everyone else**, where one source holds at most `handshakes_per_addr_max` slots (an
//!   IPv6 source is its /64, which one host typically owns whole), so filling the pool takes
//!   many addresses, and each is held only until `handshake_timeout_ms`.
//!
//! Invariants: a token holds at most one slot; `release` of a token that holds none is a no-op;
//! each pool holds at most `handshakes_max` tokens, so the maps are bounded by twice that.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use mio::Token;

/// The unit a per-address cap counts: a whole IPv4 address, or an IPv6 /64 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Source::V6Prefix(prefix)
            }
        }
    }
}

/// Which pool a slot was taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    Members,
    Outsiders(Source),
}

/// Why a connection got no handshake slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    PoolFull,
    AddressFull,
}

pub(crate) struct Admission {
    member_ips: HashSet<IpAddr>,
    pool_max: usize,
    per_addr_max: usize,
    held: HashMap<Token, Pool>,
    members_held: usize,
    outsiders_held: usize,
    /// Slots per outsider source; entries at zero are removed.
    per_source: HashMap<Source, usize>,
}

impl Admission {
    pub(crate) fn new(
        member_ips: impl IntoIterator<Item = IpAddr>,
        pool_max: usize,
        per_addr_max: usize,
    ) -> Self {
        Self {
            member_ips: member_ips.into_iter().map(|ip| ip.to_canonical()).collect(),
            pool_max,
            per_addr_max,
            held: HashMap::new(),
            members_held: 0,
            outsiders_held: 0,
            per_source: HashMap::new(),
        }
    }

    /// Gives `token` (a connection from `ip`) a handshake slot, or says why not.
    pub(crate) fn admit(&mut self, token: Token, ip: IpAddr) -> Result<(), Refused> {
        debug_assert!(!self.held.contains_key(&token), "token admitted twice");
        if self.member_ips.contains(&ip.to_canonical()) {
            if self.members_held >= self.pool_max {
                return Err(Refused::PoolFull);
            }
            self.members_held += 1;
            self.held.insert(token, Pool::Members);
            return Ok(());
        }
        let source = Source::of(ip);
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.per_addr_max {
            return Err(Refused::AddressFull);
        }
        if self.outsiders_held >= self.pool_max {
            return Err(Refused::PoolFull);
        }
        self.outsiders_held += 1;
        self.per_source.insert(source, from_source + 1);
        self.held.insert(token, Pool::Outsiders(source));
        Ok(())
    }

    /// `token`'s handshake finished or its connection closed: its slot (if any) is free.
    pub(crate) fn release(&mut self, token: Token) {
        match self.held.remove(&token) {
            None => {}
            Some(Pool::Members) => self.members_held -= 1,
            Some(Pool::Outsiders(source)) => {
                self.outsiders_held -= 1;
                if let Some(n) = self.per_source.get_mut(&source) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_source.remove(&source);
                    }
                }
            }
        }
    }

    /// Slots held now, in both pools.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn outsiders_fill_their_pool_but_never_the_members_room() {
        let mut a = Admission::new([ip("10.0.0.1"), ip("10.0.0.2")], 4, 2);
        let mut token = 0;
        let mut next = || {
            token += 1;
            Token(token)
        };
        // Two per outsider address, four in all.
        assert_eq!(a.admit(next(), ip("192.0.2.1")), Ok(()));
        assert_eq!(a.admit(next(), ip("192.0.2.1")), Ok(()));
        assert_eq!(a.admit(next(), ip("192.0.2.1")), Err(Refused::AddressFull));
        assert_eq!(a.admit(next(), ip("192.0.2.2")), Ok(()));
        assert_eq!(a.admit(next(), ip("192.0.2.3")), Ok(()));
        assert_eq!(a.admit(next(), ip("192.0.2.4")), Err(Refused::PoolFull));
        // Members still get in, up to their own pool, from any number of connections per IP.
        for _ in 0..4 {
            assert_eq!(a.admit(next(), ip("10.0.0.1")), Ok(()));
        }
        assert_eq!(a.admit(next(), ip("10.0.0.2")), Err(Refused::PoolFull));
        assert_eq!(a.held(), 8);
    }

    #[test]
    fn release_frees_the_slot_and_the_address_share() {
        let mut a = Admission::new([], 2, 1);
        assert_eq!(a.admit(Token(1), ip("192.0.2.1")), Ok(()));
        assert_eq!(
            a.admit(Token(2), ip("192.0.2.1")),
            Err(Refused::AddressFull)
        );
        a.release(Token(1));
        a.release(Token(1)); // a second release is a no-op
        a.release(Token(99)); // so is one for a token that never held a slot
        assert_eq!(a.admit(Token(3), ip("192.0.2.1")), Ok(()));
        assert_eq!(a.admit(Token(4), ip("192.0.2.2")), Ok(()));
        assert_eq!(a.admit(Token(5), ip("192.0.2.3")), Err(Refused::PoolFull));
        a.release(Token(3));
        a.release(Token(4));
        assert_eq!(a.held(), 0);
        assert!(a.per_source.is_empty());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_mapped_ipv4_is_ipv4() {
        let mut a = Admission::new([ip("10.0.0.1")], 8, 1);
        assert_eq!(a.admit(Token(1), ip("2001:db8::1")), Ok(()));
        assert_eq!(
            a.admit(Token(2), ip("2001:db8::ffff:1")),
            Err(Refused::AddressFull)
        );
        assert_eq!(a.admit(Token(3), ip("2001:db8:0:1::1")), Ok(()));
        // A member dialling over IPv6-mapped IPv4 is still the member.
        assert_eq!(a.admit(Token(4), ip("::ffff:10.0.0.1")), Ok(()));
        assert_eq!(a.admit(Token(5), ip("::ffff:10.0.0.1")), Ok(()));
        assert_eq!(a.held(), 4);
    }
}
