//! `bftctl`: the command-line client (see `bftctl --help` and `bftd::client::cli`).

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let code = bftd::client::cli::main(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
