//! Identifiers and fixed-size byte values: node ids, rounds, heights, hashes, keys, signatures.

use std::fmt;

use rkyv::{Archive, Deserialize, Serialize};

/// A consensus round (view). Round 0 belongs to the genesis block.
pub type Round = u64;
/// A block's distance from genesis (genesis is height 0).
pub type Height = u64;

/// A member of the committee, indexing the cluster's member list.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
#[rkyv(derive(Debug))]
pub struct NodeId(pub u16);

impl NodeId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

macro_rules! byte_newtype {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[rkyv(derive(Debug))]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const ZERO: Self = Self([0; $len]);
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Eight hex digits identify a value in logs without drowning them.
                write!(f, "{}:", stringify!($name))?;
                for b in &self.0[..4] {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    };
}

byte_newtype!(
    /// The blake3 hash of a block's header: its identity.
    BlockId,
    32
);
byte_newtype!(
    /// Names one cluster; every signed payload carries it so signatures never cross clusters.
    ClusterId,
    32
);
byte_newtype!(
    /// A client's Ed25519 public key, which is also its identity.
    ClientKey,
    32
);
byte_newtype!(
    /// An Ed25519 signature (R || s).
    Sig,
    64
);

impl ClusterId {
    /// Derives the cluster id from the operator-chosen cluster name.
    pub fn from_name(name: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"bftd/cluster-id/v1");
        h.update(name.as_bytes());
        Self(*h.finalize().as_bytes())
    }
}
