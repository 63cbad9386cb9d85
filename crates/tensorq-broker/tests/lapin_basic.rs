//! Publishing, consuming, acknowledging and confirms through the real `lapin` client.

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

#[tokio::test]
async fn publish_consume_ack_in_order() {
    let s = server().await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "work".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for i in 0..500u32 {
        ch.basic_publish(
            "".into(),
            "work".into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let consumer_ch = channel(&conn).await;
    let mut consumer = consumer_ch
        .basic_consume(
            "work".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..500u32 {
        let d = within("delivery", consumer.next()).await.unwrap().unwrap();
        assert_eq!(d.data, i.to_be_bytes());
        assert!(!d.redelivered);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let q = ch
        .queue_declare(
            "work".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    assert_eq!(q.consumer_count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn confirms_and_mandatory_returns() {
    let s = server().await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "c".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut confirms = Vec::new();
    for _ in 0..1000 {
        confirms.push(
            ch.basic_publish(
                "".into(),
                "c".into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(matches!(
            within("confirm", c).await.unwrap(),
            Confirmation::Ack(None)
        ));
    }
    let returned = ch
        .basic_publish(
            "".into(),
            "nowhere".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost?",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    match within("return", returned).await.unwrap() {
        Confirmation::Ack(Some(ret)) => {
            assert_eq!(ret.reply_code, 312);
            assert_eq!(ret.data, b"lost?");
        }
        other => panic!("expected a returned ack, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn nack_requeues_to_the_old_position_as_redelivered() {
    let s = server().await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "rq".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for b in [b"a", b"b", b"c"] {
        ch.basic_publish(
            "".into(),
            "rq".into(),
            BasicPublishOptions::default(),
            b,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let first = ch
        .basic_get("rq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.delivery.data, b"a");
    assert_eq!(first.message_count, 2);
    let second = ch
        .basic_get("rq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.delivery.data, b"b");
    first
        .delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let again = ch
        .basic_get("rq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.delivery.data, b"a");
    assert!(again.delivery.redelivered);
    second
        .delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let third = ch
        .basic_get("rq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.delivery.data, b"c");
    assert!(ch
        .basic_get("rq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    s.stop().await;
}

#[tokio::test]
async fn prefetch_limits_unacked_and_close_requeues() {
    let s = server().await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "pf".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for i in 0..10u8 {
        ch.basic_publish(
            "".into(),
            "pf".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let cch = channel(&conn).await;
    cch.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    let mut consumer = cch
        .basic_consume(
            "pf".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(within("delivery", consumer.next()).await.unwrap().unwrap());
    }
    // The fourth must not come while three are unacked.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), consumer.next())
            .await
            .is_err()
    );
    let q = ch
        .queue_declare(
            "pf".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 7);
    got[0].ack(BasicAckOptions::default()).await.unwrap();
    let fourth = within("fourth", consumer.next()).await.unwrap().unwrap();
    assert_eq!(fourth.data, [3]);
    cch.close(200, "bye".into()).await.unwrap();
    let q = ch
        .queue_declare(
            "pf".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        q.message_count(),
        9,
        "unacked deliveries return when their channel closes"
    );
    let back = ch
        .basic_get("pf".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.delivery.data, [1]);
    assert!(back.delivery.redelivered);
    s.stop().await;
}

#[tokio::test]
async fn round_robin_across_consumers() {
    let s = server().await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "rr".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut a = ch
        .basic_consume(
            "rr".into(),
            "a".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut b = ch
        .basic_consume(
            "rr".into(),
            "b".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..10u8 {
        ch.basic_publish(
            "".into(),
            "rr".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    for _ in 0..5 {
        from_a.push(within("a", a.next()).await.unwrap().unwrap().data[0]);
        from_b.push(within("b", b.next()).await.unwrap().unwrap().data[0]);
    }
    assert_eq!(from_a, vec![0, 2, 4, 6, 8]);
    assert_eq!(from_b, vec![1, 3, 5, 7, 9]);
    s.stop().await;
}

#[tokio::test]
async fn transactions_commit_and_rollback() {
    let s = server().await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "tx".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.tx_select().await.unwrap();
    ch.basic_publish(
        "".into(),
        "tx".into(),
        BasicPublishOptions::default(),
        b"1",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let other = channel(&conn).await;
    let q = other
        .queue_declare(
            "tx".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0, "uncommitted publish is invisible");
    ch.tx_rollback().await.unwrap();
    ch.basic_publish(
        "".into(),
        "tx".into(),
        BasicPublishOptions::default(),
        b"2",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.tx_commit().await.unwrap();
    let got = other
        .basic_get("tx".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, b"2");
    assert!(other
        .basic_get("tx".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    s.stop().await;
}
