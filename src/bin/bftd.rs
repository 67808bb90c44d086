//! `bftd`: the node daemon (`bftd --config FILE`, `bftd dev`) and its tools: `bftd sim` (the
//! deterministic simulator), `bftd keygen` and `bftd testnet` (keys and config files).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let cmd = args.next();
    // `bftd dev` and `bftd sim` print their own summaries; the logs of the nodes (or of the
    // simulated nodes' storage) would bury them, so they show warnings only unless RUST_LOG
    // says otherwise.
    let default_level = if matches!(cmd.as_deref().and_then(|c| c.to_str()), Some("dev" | "sim")) {
        "warn"
    } else {
        "info"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
    let Some(cmd) = cmd else {
        eprint!("{}", bftd::cli::HELP);
        return ExitCode::from(2);
    };
    let rest: Vec<std::ffi::OsString> = args.collect();
    let result = match cmd.to_str() {
        Some("sim") => bftd::cli::sim::main(rest),
        Some("start") => bftd::cli::start::main(rest),
        Some("dev") => bftd::cli::dev::main(rest),
        Some("inspect") => bftd::cli::inspect::main(rest),
        Some("snapshot") => bftd::cli::snapshot::main(rest),
        Some(flag) if flag == "-c" || flag.starts_with("--config") => {
            let mut all = vec![cmd.clone()];
            all.extend(rest);
            bftd::cli::start::main(all)
        }
        Some("keygen") => bftd::cli::keygen::main(rest),
        Some("testnet") => bftd::cli::testnet::main(rest),
        Some("-h" | "--help" | "help") => {
            print!("{}", bftd::cli::HELP);
            Ok(())
        }
        Some("-V" | "--version") => {
            println!("bftd {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(other) => Err(format!("unknown command '{other}'; see 'bftd --help'")),
        None => Err("command is not valid UTF-8; see 'bftd --help'".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bftd: {e}");
            ExitCode::FAILURE
        }
    }
}
