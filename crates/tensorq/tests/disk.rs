//! Disk trouble through real clients: the disk-free alarm blocks publishers, and a write error
//! reaches the publisher as a nack (never a silent drop), leaving the broker serving.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

fn start(dir: &Path, shell_prefix: &str, extra: &str) -> (Child, u16) {
    let port_file = dir.join("port");
    let cmd = format!(
        "{shell_prefix} exec '{}' server --listen 127.0.0.1:0 --port-file '{}' --data-dir '{}' {extra}",
        env!("CARGO_BIN_EXE_tensorq"),
        port_file.display(),
        dir.join("data").display()
    );
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut child = Command::new("bash")
        .args(["-c", &cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            return (child, port);
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            panic!(
                "server did not start: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn connect(port: u16) -> Connection {
    Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn disk_alarm_blocks_publishers() {
    let dir = tempfile::tempdir().unwrap();
    // A limit no disk can meet: the alarm is raised at the first check.
    let (mut child, port) = start(dir.path(), "", "--disk-free-limit 1000000000000000000");
    let conn = connect(port).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "d".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        "d".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let mut blocked = false;
    for _ in 0..50 {
        if conn.status().blocked() {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(
        blocked,
        "publisher gets connection.blocked under the disk alarm; log:\n{log}"
    );
    assert!(log.contains("disk alarm"), "{log}");
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test]
async fn write_errors_become_nacks() {
    let dir = tempfile::tempdir().unwrap();
    // Files may not grow past 256 KiB (EFBIG instead of SIGXFSZ, which is ignored).
    let (mut child, port) = start(dir.path(), "trap '' XFSZ; ulimit -f 256;", "");
    let conn = connect(port).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "full".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let body = vec![1u8; 4096];
    let (mut acked, mut nacked) = (0, 0);
    for _ in 0..200 {
        let c = ch
            .basic_publish(
                "".into(),
                "full".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .expect("confirm or nack arrives")
            .unwrap()
        {
            Confirmation::Ack(_) => acked += 1,
            Confirmation::Nack(_) => nacked += 1,
            Confirmation::NotRequested => unreachable!(),
        }
        if nacked > 0 {
            break;
        }
    }
    assert!(acked > 0 && nacked > 0, "acked {acked}, nacked {nacked}");
    // The broker still answers: a transient queue works.
    let ch2 = conn.create_channel().await.unwrap();
    ch2.queue_declare(
        "still-alive".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(
        log.to_lowercase().contains("nack") || log.contains("not stored"),
        "{log}"
    );
    child.kill().unwrap();
    let _ = child.wait();
}
