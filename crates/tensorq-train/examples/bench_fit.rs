//! Times `fit` + `evaluate` on CSV data, for `bench/train_vs_keras.sh`:
//! `bench_fit TRAIN_CSV TEST_CSV SPEC_TOML` prints one JSON line
//! `{"examples_per_sec":..,"fit_seconds":..,"test_loss":..,"test_accuracy":..}`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use tensorq_train::{Dataset, ModelSpec, Trainer};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [train, test, spec] = args.as_slice() else {
        eprintln!("usage: bench_fit TRAIN_CSV TEST_CSV SPEC_TOML");
        return ExitCode::from(2);
    };
    let run = || -> Result<String, Box<dyn std::error::Error>> {
        let spec = ModelSpec::from_file(Path::new(spec))?;
        let train = Dataset::read_csv(Path::new(train))?;
        let test = Dataset::read_csv(Path::new(test))?;
        let mut t = Trainer::new(spec.clone());
        let started = Instant::now();
        t.fit(&train, spec.epochs, spec.batch_size, |_| {})?;
        let secs = started.elapsed().as_secs_f64();
        let eval = t.evaluate(&test)?;
        Ok(format!(
            "{{\"examples_per_sec\":{:.1},\"fit_seconds\":{:.3},\"test_loss\":{:.5},\"test_accuracy\":{:.5}}}",
            (train.len() * spec.epochs) as f64 / secs,
            secs,
            eval.loss,
            eval.accuracy
        ))
    };
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_fit: {e}");
            ExitCode::FAILURE
        }
    }
}
