//! Exchange types, exchange-to-exchange bindings and the errors that close only a channel,
//! through `lapin`.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

async fn count(ch: &lapin::Channel, q: &str) -> u32 {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

#[tokio::test]
async fn topic_headers_and_exchange_to_exchange() {
    let s = server().await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    for q in ["t1", "t2", "h1", "e2e"] {
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.queue_bind(
        "t1".into(),
        "amq.topic".into(),
        "sensor.*.temp".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "t2".into(),
        "amq.topic".into(),
        "sensor.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for key in ["sensor.a.temp", "sensor.a.b.temp", "sensor", "other.a.temp"] {
        ch.basic_publish(
            "amq.topic".into(),
            key.into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut args = FieldTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("any".into()));
    args.insert("kind".into(), AMQPValue::LongString("image".into()));
    ch.queue_bind(
        "h1".into(),
        "amq.headers".into(),
        "".into(),
        QueueBindOptions::default(),
        args,
    )
    .await
    .unwrap();
    let mut headers = FieldTable::default();
    headers.insert("kind".into(), AMQPValue::LongString("image".into()));
    ch.basic_publish(
        "amq.headers".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default().with_headers(headers),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "amq.headers".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "src".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        "amq.direct".into(),
        "src".into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "e2e".into(),
        "amq.direct".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "src".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(count(&ch, "t1").await, 1);
    assert_eq!(count(&ch, "t2").await, 3);
    assert_eq!(count(&ch, "h1").await, 1);
    assert_eq!(count(&ch, "e2e").await, 1);
    ch.exchange_unbind(
        "amq.direct".into(),
        "src".into(),
        "".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "src".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(count(&ch, "e2e").await, 1);
    s.stop().await;
}

#[tokio::test]
async fn channel_errors_close_only_the_channel() {
    let s = server().await;
    let conn = connect(&s).await;
    let bystander = connect(&s).await;
    let bch = channel(&bystander).await;
    let bad = channel(&conn).await;
    let err = bad
        .queue_declare(
            "missing".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(
        format!("{err}").contains("404") || format!("{err:?}").contains("NOTFOUND"),
        "{err:?}"
    );
    // The connection and other connections carry on.
    let good = channel(&conn).await;
    good.queue_declare(
        "ok".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let inequivalent = channel(&conn).await;
    let err = inequivalent
        .queue_declare(
            "ok".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("PRECONDITION"), "{err:?}");
    let acker = channel(&conn).await;
    acker
        .basic_ack(99, BasicAckOptions::default())
        .await
        .unwrap();
    // The 406 for an unknown tag arrives asynchronously; the next call on the channel fails.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(acker
        .queue_declare(
            "ok".into(),
            QueueDeclareOptions::default(),
            FieldTable::default()
        )
        .await
        .is_err());
    bch.queue_declare(
        "ok".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    assert!(conn.status().connected());
    s.stop().await;
}

#[tokio::test]
async fn deleting_a_consumed_queue_cancels_its_consumer() {
    use futures_lite::StreamExt;
    let s = server().await;
    let conn = connect(&s).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "gone".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            "gone".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let other = channel(&conn).await;
    let deleted = other
        .queue_delete("gone".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    // lapin ends the consumer stream when the server cancels it.
    let end = within("cancel", consumer.next()).await;
    assert!(end.is_none(), "consumer stream ends on server cancel");
    s.stop().await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_320() {
    let s = server().await;
    let conn = connect(&s).await;
    let _ch = channel(&conn).await;
    s.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!conn.status().connected());
}
