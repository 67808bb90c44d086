//! The `bftd` command line: the one entry point of the `bftd` binary (and of the test-only
//! `bftd-byzantine`, which is the same program allowed to play a Byzantine member).

use std::process::ExitCode;

/// Runs the command named by the process arguments and returns its exit status.
pub fn run() -> ExitCode {
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
    crate::node::logging::init(default_level);
    let Some(cmd) = cmd else {
        eprint!("{}", crate::cli::HELP);
        return ExitCode::from(2);
    };
    let rest: Vec<std::ffi::OsString> = args.collect();
    let result = match cmd.to_str() {
        Some("sim") => crate::cli::sim::main(rest),
        Some("start") => crate::cli::start::main(rest),
        Some("dev") => crate::cli::dev::main(rest),
        Some("inspect") => crate::cli::inspect::main(rest),
        Some("snapshot") => crate::cli::snapshot::main(rest),
        Some(flag) if flag == "-c" || flag.starts_with("--config") => {
            let mut all = vec![cmd.clone()];
            all.extend(rest);
            crate::cli::start::main(all)
        }
        Some("keygen") => crate::cli::keygen::main(rest),
        Some("show-keys") => crate::cli::show_keys::main(rest),
        Some("testnet") => crate::cli::testnet::main(rest),
        Some("-h" | "--help" | "help") => {
            print!("{}", crate::cli::HELP);
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
            if crate::cli::is_usage_mistake(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
