//! `bftctl`: the command-line client. The client library and its commands arrive with the
//! client issue; until then it says so instead of pretending.

fn main() {
    eprintln!("bftctl: not built yet: the client library arrives with the client issue");
    std::process::exit(2);
}
