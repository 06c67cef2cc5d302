// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Writes every known-answer vector, valid or not, into a directory as a
//! seed corpus for the fuzz target (`make fuzz`).

use std::{env, fs, path::PathBuf, process::ExitCode};
use virtio_msg_wire::wire_vectors::{
    BUS, LENIENT, MALFORMED, TRANSPORT_EVENTS, TRANSPORT_REQUESTS, TRANSPORT_RESPONSES,
};

fn main() -> ExitCode {
    let Some(dir) = env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz_seeds DIRECTORY");
        return ExitCode::FAILURE;
    };
    let valid = TRANSPORT_REQUESTS
        .iter()
        .chain(TRANSPORT_RESPONSES)
        .chain(TRANSPORT_EVENTS)
        .chain(BUS)
        .chain(LENIENT);
    let seeds = valid
        .map(|v| v.bytes)
        .chain(MALFORMED.iter().map(|v| v.bytes));
    for (i, bytes) in seeds.enumerate() {
        if let Err(e) = fs::write(dir.join(format!("seed-{i:03}")), bytes) {
            eprintln!("fuzz_seeds: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
