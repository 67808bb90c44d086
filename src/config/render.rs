//! Writes node and client config files as TOML text (by hand, so the files carry comments and
//! keep a stable, reviewable layout). What is rendered here must load with [`super::NodeConfig::load`];
//! the testnet tests check that round trip.

use std::fmt::Write as _;
use std::path::Path;

use super::{AllowedClient, Member};
use crate::keys_file::to_hex;

/// What every file of one cluster shares.
pub struct ClusterSpec {
    pub cluster_name: String,
    pub f: usize,
    pub members: Vec<Member>,
    /// Empty means `allow = "any"`.
    pub clients: Vec<AllowedClient>,
}

/// Paths written into one file (relative ones resolve against the file's directory).
pub struct OwnPaths<'a> {
    pub signing_key_path: &'a Path,
    pub noise_key_path: &'a Path,
}

/// TOML strings need `"` and `\` escaped; paths and names are otherwise written as they are.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn members_toml(out: &mut String, members: &[Member]) {
    for m in members {
        let _ = write!(
            out,
            "\n[[members]]\nid = {}\naddr = \"{}\"\nsigning_public_key = \"{}\"\nnoise_public_key = \"{}\"\n",
            m.id.0,
            m.addr,
            to_hex(&m.signing_public_key),
            to_hex(&m.noise_public_key)
        );
    }
}

/// The config file of member `node` (its listen address is its member address).
pub fn render_node(spec: &ClusterSpec, node: usize, data_dir: &Path, keys: &OwnPaths) -> String {
    let mut out = String::from("# bftd node config; see the README, \"Configuration\".\n");
    let listen = spec
        .members
        .get(node)
        .map(|m| m.addr.to_string())
        .unwrap_or_default();
    let _ = write!(
        out,
        "cluster_name = {}\nnode_id = {node}\nlisten_addr = \"{listen}\"\ndata_dir = {}\n\
         signing_key_path = {}\nnoise_key_path = {}\nf = {}\n",
        quote(&spec.cluster_name),
        quote(&data_dir.to_string_lossy()),
        quote(&keys.signing_key_path.to_string_lossy()),
        quote(&keys.noise_key_path.to_string_lossy()),
        spec.f
    );
    if spec.clients.is_empty() {
        out.push_str("\n[clients]\nallow = \"any\"\n");
    } else {
        out.push_str("\n[clients]\nallow = [\n");
        for c in &spec.clients {
            let _ = writeln!(
                out,
                "    {{ signing_public_key = \"{}\", noise_public_key = \"{}\" }},",
                to_hex(&c.signing_public_key),
                to_hex(&c.noise_public_key)
            );
        }
        out.push_str("]\n");
    }
    out.push_str("\n[consensus]\n# Defaults apply to every field left out; see the README.\n");
    out.push_str("\n[limits]\n");
    out.push_str("\n[node]\n");
    members_toml(&mut out, &spec.members);
    out
}

/// `client.toml` for `bftctl` and `loadgen`.
pub fn render_client(spec: &ClusterSpec, keys: &OwnPaths) -> String {
    let mut out = String::from("# bftd client config (bftctl, loadgen).\n");
    let _ = write!(
        out,
        "cluster_name = {}\nf = {}\nsigning_key_path = {}\nnoise_key_path = {}\n",
        quote(&spec.cluster_name),
        spec.f,
        quote(&keys.signing_key_path.to_string_lossy()),
        quote(&keys.noise_key_path.to_string_lossy())
    );
    members_toml(&mut out, &spec.members);
    out
}
