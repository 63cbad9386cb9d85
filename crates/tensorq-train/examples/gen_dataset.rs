//! Writes the generated dataset (the same rule and seed the tests use) to CSV, for the Keras
//! benchmark: `cargo run --release -p tensorq-train --example gen_dataset -- OUT_DIR [N] [SEED]`
//! writes `OUT_DIR/train.csv` (80%) and `OUT_DIR/test.csv` (20%).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: gen_dataset OUT_DIR [N=10000] [SEED=1]");
        return ExitCode::from(2);
    };
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let seed: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(1);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let (train, test) = tensorq_train::generate(n, seed).split_tail(0.2);
    for (name, d) in [("train.csv", &train), ("test.csv", &test)] {
        if let Err(e) = d.write_csv(&dir.join(name)) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "wrote {} train and {} test examples to {}",
        train.len(),
        test.len(),
        dir.display()
    );
    ExitCode::SUCCESS
}
