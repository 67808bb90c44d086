//! `bftctl`: the command-line client (see `bftctl --help` and `bftd::client::cli`).

fn main() {
    bftd::node::logging::init("warn");
    let code = bftd::client::cli::main(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
