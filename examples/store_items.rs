//! Counts the items of each sled tree of a hookrelay data directory: what the store
//! holds, for the memory figures of docs/benchmarks.md (sled's bookkeeping grows with
//! the items stored). `scripts/store-items.sh` runs it on a copy taken during a backlog.
//!
//! Usage: `store_items DIR`. Opening a sled database recovers and rewrites its log, so
//! point it at a copy, never at the data directory of a running gateway.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: store_items DIR (a copy of a hookrelay data directory)");
        return ExitCode::from(2);
    };
    match count(std::path::Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("store_items: {error}");
            ExitCode::FAILURE
        }
    }
}

fn count(dir: &std::path::Path) -> Result<(), sled::Error> {
    let db = sled::Config::new().path(dir).open()?;
    println!("| tree | items | average key / value bytes |");
    println!("| --- | --- | --- |");
    let mut total = 0_u64;
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        let (mut items, mut key_bytes, mut value_bytes) = (0_u64, 0_u64, 0_u64);
        for entry in tree.iter() {
            let (key, value) = entry?;
            items += 1;
            key_bytes += key.len() as u64;
            value_bytes += value.len() as u64;
        }
        total += items;
        let average = |bytes: u64| bytes as f64 / items.max(1) as f64;
        println!(
            "| `{}` | {items} | {:.0} / {:.0} |",
            String::from_utf8_lossy(&name),
            average(key_bytes),
            average(value_bytes)
        );
    }
    println!("| all trees | {total} | |");
    Ok(())
}
