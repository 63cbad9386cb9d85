// Node's amqplib (the promise API, as its users write it) against the broker at the URL given
// as the first argument. Run by tests/python/test_node_amqplib.py against tensorq and against
// RabbitMQ; prints "all amqplib checks passed" and exits 0 only if every check held.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';

const url = process.argv[2];
if (!url) {
  console.error('usage: node amqplib_clients.mjs AMQP_URL');
  process.exit(2);
}
const tag = randomUUID().slice(0, 8);
const names = { work: `tq-node-work-${tag}`, topic: `tq-node-topic-${tag}`, bound: `tq-node-bound-${tag}`,
  rpc: `tq-node-rpc-${tag}` };

// Resolves with the first `n` messages `consume` delivers on `queue` (each handed to `each`
// first, e.g. to ack it).
function collect(ch, queue, n, options = {}, each = () => {}) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} messages on ${queue}`)), 10000);
    ch.consume(queue, (msg) => {
      each(msg);
      got.push(msg);
      if (got.length === n) {
        clearTimeout(timer);
        resolve(got);
      }
    }, options).catch(reject);
  });
}

async function confirmedPublishConsumeAck(conn) {
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(names.work, { durable: true });
  for (let i = 0; i < 50; i++) {
    ch.sendToQueue(names.work, Buffer.from(JSON.stringify({ n: i, features: [0.1, 0.2] })), {
      persistent: true, correlationId: `c-${i}`, contentType: 'application/json',
      headers: { 'x-source': 'sensor', 'x-seq': i },
    });
  }
  await ch.waitForConfirms();
  await ch.prefetch(10);
  // Acked as they arrive: with prefetch 10, the broker sends more only as earlier ones are acked.
  const msgs = await collect(ch, names.work, 50, {}, (m) => ch.ack(m));
  msgs.forEach((m, i) => {
    assert.deepEqual(JSON.parse(m.content.toString()), { n: i, features: [0.1, 0.2] });
    assert.equal(m.properties.correlationId, `c-${i}`);
    assert.equal(m.properties.contentType, 'application/json');
    assert.equal(m.properties.deliveryMode, 2);
    assert.equal(m.properties.headers['x-source'], 'sensor');
    assert.equal(m.properties.headers['x-seq'], i);
  });
  await ch.close();
  const check = await conn.createChannel();
  const q = await check.checkQueue(names.work);
  assert.equal(q.messageCount, 0, 'every message was acked');
  await check.close();
  console.log('ok - confirmed publish, prefetch, consume, ack, properties and headers');
}

async function topicRoutingAndGet(conn) {
  const ch = await conn.createChannel();
  await ch.assertExchange(names.topic, 'topic', { durable: false, autoDelete: false });
  await ch.assertQueue(names.bound, { exclusive: true });
  await ch.bindQueue(names.bound, names.topic, 'sensor.*.temp');
  for (const key of ['sensor.a.temp', 'sensor.b.temp', 'sensor.a.humidity', 'audit.login']) {
    ch.publish(names.topic, key, Buffer.from(key));
  }
  const seen = [];
  for (;;) {
    const m = await ch.get(names.bound, { noAck: false });
    if (m === false) {
      if (seen.length === 2) break;
      await new Promise((r) => setTimeout(r, 20));
      continue;
    }
    seen.push(m.content.toString());
    if (seen.length === 1) {
      ch.nack(m, false, true); // requeued: comes back first, redelivered
      const again = await ch.get(names.bound, { noAck: false });
      assert.equal(again.content.toString(), seen[0]);
      assert.equal(again.fields.redelivered, true);
      ch.ack(again);
    } else {
      ch.ack(m);
    }
  }
  assert.deepEqual(seen, ['sensor.a.temp', 'sensor.b.temp']);
  await ch.deleteExchange(names.topic);
  await ch.close();
  console.log('ok - topic routing, basic.get, nack with requeue, redelivered flag');
}

async function rpcThroughReplyQueue(conn) {
  const server = await conn.createChannel();
  await server.assertQueue(names.rpc, { durable: false, autoDelete: false });
  let cancelled = null;
  const cancelledSeen = new Promise((resolve) => { cancelled = resolve; });
  await server.consume(names.rpc, (msg) => {
    if (msg === null) { // basic.cancel from the broker: the queue was deleted under us
      cancelled();
      return;
    }
    const x = JSON.parse(msg.content.toString());
    server.sendToQueue(msg.properties.replyTo, Buffer.from(JSON.stringify({ predictions: [x.instances[0].length] })),
      { correlationId: msg.properties.correlationId });
    server.ack(msg);
  });
  const client = await conn.createChannel();
  const { queue: replyTo } = await client.assertQueue('', { exclusive: true });
  assert.match(replyTo, /^amq\.gen-/, 'server-named queue');
  const replies = collect(client, replyTo, 3, { noAck: true });
  for (let i = 0; i < 3; i++) {
    client.sendToQueue(names.rpc, Buffer.from(JSON.stringify({ instances: [new Array(8).fill(i)] })),
      { replyTo, correlationId: `rpc-${i}` });
  }
  const got = (await replies).map((m) => [m.properties.correlationId, JSON.parse(m.content.toString())]);
  got.sort();
  assert.deepEqual(got, [0, 1, 2].map((i) => [`rpc-${i}`, { predictions: [8] }]));
  await client.close();
  await server.deleteQueue(names.rpc);
  await cancelledSeen;
  await server.close();
  console.log('ok - request/reply through an exclusive server-named queue; consumer cancelled when its queue is deleted');
}

async function channelErrorsLeaveTheConnectionUsable(conn) {
  const ch = await conn.createChannel();
  const closed = new Promise((resolve) => ch.on('close', resolve));
  ch.on('error', () => {}); // the 404 also arrives as an 'error' event
  await assert.rejects(ch.checkQueue(`tq-node-missing-${tag}`), (err) => {
    assert.equal(err.code, 404);
    assert.match(err.message, /NOT_FOUND/);
    return true;
  });
  await closed;
  const again = await conn.createChannel();
  const q = await again.checkQueue(names.work);
  assert.equal(q.queue, names.work);
  await again.deleteQueue(names.work);
  await again.close();
  console.log('ok - passive declare of a missing queue: 404 closes the channel, not the connection');
}

const conn = await amqp.connect(url);
try {
  await confirmedPublishConsumeAck(conn);
  await topicRoutingAndGet(conn);
  await rpcThroughReplyQueue(conn);
  await channelErrorsLeaveTheConnectionUsable(conn);
} finally {
  await conn.close();
}
console.log('all amqplib checks passed');
