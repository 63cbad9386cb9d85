//! Durability through `lapin`: durable definitions and persistent messages survive a restart on
//! the same data dir; transient ones do not; a second broker cannot take a locked data dir.

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, ExchangeKind};
use tensorq_broker::{BrokerConfig, RunningServer};

fn config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: Some(dir.to_path_buf()),
        ..BrokerConfig::default()
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

#[tokio::test]
async fn durable_state_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with(config(dir.path())).await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.exchange_declare(
        "orders".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        "keep".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        "also".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        "temp".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for q in ["keep", "also", "temp"] {
        ch.queue_bind(
            q.into(),
            "orders".into(),
            "eu.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for i in 0..200u32 {
        let props = if i % 2 == 0 {
            persistent()
        } else {
            BasicProperties::default()
        };
        let c = ch
            .basic_publish(
                "orders".into(),
                "eu.de".into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                props,
            )
            .await
            .unwrap();
        assert!(matches!(
            within("confirm", c).await.unwrap(),
            Confirmation::Ack(_)
        ));
    }
    // Take two messages and leave them unacked at shutdown: they come back redelivered.
    let cch = channel(&conn).await;
    cch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut consumer = cch
        .basic_consume(
            "keep".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = within("delivery", consumer.next()).await.unwrap().unwrap();
    assert_eq!(first.data, 0u32.to_be_bytes());
    drop(conn);
    s.stop().await;

    let s = server_with(config(dir.path())).await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let keep = ch
        .queue_declare("keep".into(), passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(
        keep.message_count(),
        100,
        "only the persistent half comes back"
    );
    let also = ch
        .queue_declare("also".into(), passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(also.message_count(), 100);
    assert!(
        ch.queue_declare("temp".into(), passive, FieldTable::default())
            .await
            .is_err(),
        "transient queue is gone"
    );
    let ch = channel(&conn).await;
    // The binding came back too.
    ch.basic_publish(
        "orders".into(),
        "eu.fr".into(),
        BasicPublishOptions::default(),
        b"after",
        persistent(),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..101 {
        let m = ch
            .basic_get("keep".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        seen.push((m.delivery.data.clone(), m.delivery.redelivered));
    }
    assert_eq!(
        seen[0],
        (0u32.to_be_bytes().to_vec(), true),
        "the unacked message is first and redelivered"
    );
    assert_eq!(seen[1].0, 2u32.to_be_bytes().to_vec());
    assert_eq!(seen[99].0, 198u32.to_be_bytes().to_vec(), "order is kept");
    assert_eq!(seen[100].0, b"after".to_vec());
    assert!(ch
        .basic_get("keep".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    s.stop().await;
}

#[tokio::test]
async fn a_locked_data_dir_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with(config(dir.path())).await;
    let mut second = config(dir.path());
    second.listen = "127.0.0.1:0".into();
    let err = match RunningServer::start(second).await {
        Ok(_) => panic!("a second broker took a locked data dir"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.to_lowercase().contains("lock"), "{err}");
    s.stop().await;
}

#[tokio::test]
async fn out_of_range_lazy_write_delay_stops_start_up_with_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.listen = "127.0.0.1:0".into();
    c.lazy_write_ms = 5000;
    let err = match RunningServer::start(c).await {
        Ok(_) => panic!("a 5 s lazy write delay was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("lazy_write_ms 5000") && err.contains("0..=1000"),
        "{err}"
    );
    // A store error is reported once, not once per level of the error chain.
    let s = server_with(config(dir.path())).await;
    let mut second = config(dir.path());
    second.listen = "127.0.0.1:0".into();
    let err = match RunningServer::start(second).await {
        Ok(_) => panic!("a second broker took a locked data dir"),
        Err(e) => e,
    };
    // What `tensorq server` prints: the error and each of its sources.
    let mut report = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        report = format!("{report}: {s}");
        source = s.source();
    }
    let reason = report.rsplit(": ").next().unwrap_or_default();
    assert_eq!(report.matches(reason).count(), 1, "{report}");
    s.stop().await;
}

#[tokio::test]
async fn acked_messages_free_their_segments() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with(config(dir.path())).await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "drain".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let body = vec![7u8; 1024];
    let mut confirms = Vec::new();
    for _ in 0..3000 {
        confirms.push(
            ch.basic_publish(
                "".into(),
                "drain".into(),
                BasicPublishOptions::default(),
                &body,
                persistent(),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(matches!(
            within("confirm", c).await.unwrap(),
            Confirmation::Ack(_)
        ));
    }
    let used = s
        .broker
        .persistence
        .as_ref()
        .unwrap()
        .store
        .disk_usage()
        .unwrap();
    assert!(used > 3_000_000, "messages are on disk: {used}");
    let cch = channel(&conn).await;
    cch.basic_qos(500, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = cch
        .basic_consume(
            "drain".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..3000 {
        let d = within("delivery", consumer.next()).await.unwrap().unwrap();
        assert_eq!(d.data.len(), 1024);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    // Segment deletion runs on the store's sync thread; give it a moment.
    let mut used = u64::MAX;
    for _ in 0..50 {
        used = s
            .broker
            .persistence
            .as_ref()
            .unwrap()
            .store
            .disk_usage()
            .unwrap();
        if used < 1_000_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        used < 1_000_000,
        "disk use returns near zero after the drain: {used}"
    );
    s.stop().await;
}

/// Every sync policy confirms every persistent publish, including when the write completes
/// before the publishing connection starts waiting for it (`never`, `interval=…`).
#[tokio::test]
async fn every_sync_policy_confirms() {
    for sync in ["always", "interval=50", "never"] {
        let dir = tempfile::tempdir().unwrap();
        let s = server_with(BrokerConfig {
            sync: sync.into(),
            ..config(dir.path())
        })
        .await;
        let conn = connect(&s).await;
        let ch = channel(&conn).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        ch.queue_declare(
            "p".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        for round in 0..20 {
            let mut confirms = Vec::new();
            for _ in 0..25 {
                confirms.push(
                    ch.basic_publish(
                        "".into(),
                        "p".into(),
                        BasicPublishOptions::default(),
                        b"m",
                        persistent(),
                    )
                    .await
                    .unwrap(),
                );
            }
            for c in confirms {
                let got = within(&format!("confirm with sync={sync}, round {round}"), c)
                    .await
                    .unwrap();
                assert!(matches!(got, Confirmation::Ack(_)));
            }
        }
        s.stop().await;
    }
}
