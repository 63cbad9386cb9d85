//! Flow control seen through `lapin`: the memory alarm blocks publishers (connection.blocked)
//! while consumers on other connections keep draining.

mod common;

use std::time::Duration;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use tensorq_broker::BrokerConfig;

#[tokio::test]
async fn memory_alarm_blocks_publishers_not_consumers() {
    // A watermark of 1 byte: the alarm is raised at the first sample.
    let s = server_with(BrokerConfig {
        memory_high_watermark_bytes: Some(1),
        data_dir: None,
        ..BrokerConfig::default()
    })
    .await;
    let setup = connect(&s).await;
    let sch = channel(&setup).await;
    sch.queue_declare(
        "mem".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    sch.basic_publish(
        "".into(),
        "mem".into(),
        BasicPublishOptions::default(),
        b"before",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    // The consumer connection never published, so it is never blocked.
    let consumer_conn = connect(&s).await;
    let cch = channel(&consumer_conn).await;
    let mut consumer = cch
        .basic_consume(
            "mem".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = within("delivery under alarm", consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.data, b"before");
    // The publisher is told it is blocked (lapin announces connection.blocked).
    let mut blocked = false;
    for _ in 0..50 {
        if setup.status().blocked() {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(blocked, "publishing connection receives connection.blocked");
    // Its next publish is not read (lapin even holds it back while blocked), so it never
    // reaches the consumer.
    let held = tokio::spawn(async move {
        let _ = sch
            .basic_publish(
                "".into(),
                "mem".into(),
                BasicPublishOptions::default(),
                b"held",
                BasicProperties::default(),
            )
            .await;
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), consumer.next())
            .await
            .is_err()
    );
    held.abort();
    s.stop().await;
}
