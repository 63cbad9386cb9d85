//! `tensorq demo --fast` runs in the suite: the embedded broker, training from a queue,
//! evaluation, serving and RPC all have to work for it to exit 0 with its report.

use std::process::Command;

#[test]
fn demo_fast_mode_runs_end_to_end() {
    let out = Command::new(env!("CARGO_BIN_EXE_tensorq"))
        .args(["demo", "--fast"])
        .env("TENSORQ_LOG", "warn")
        .output()
        .expect("running tensorq demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for needle in [
        "published 1000 labelled examples",
        "held-out examples — loss: ",
        "300 predictions in",
        "throughput N/T =",
        "done.",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    // The accuracy Keras-style line must carry a number in [0, 1].
    let acc: f64 = stdout
        .split("accuracy: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in:\n{stdout}"));
    assert!((0.5..=1.0).contains(&acc), "accuracy {acc} out of range");
}
