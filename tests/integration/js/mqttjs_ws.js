// mqttjs_ws.js PORT — MQTT.js over ws:// against mqrouter: for MQTT 3.1.1
// and 5, a subscriber and a publisher exchange a QoS 0 and a QoS 1 message
// (the QoS 1 publish must be acknowledged). Exits 0 when all arrived, 1
// with the reason otherwise; gives up after 10 s.
const mqtt = require("mqtt");
const port = process.argv[2];
const url = `ws://127.0.0.1:${port}/mqtt`;

function connect(id, version) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { clientId: id, protocolVersion: version, reconnectPeriod: 0 });
    c.once("connect", () => resolve(c));
    c.once("error", reject);
  });
}

async function round(version) {
  const sub = await connect(`js-sub-${version}`, version);
  const pub = await connect(`js-pub-${version}`, version);
  const got = [];
  const all = new Promise((resolve) => {
    sub.on("message", (topic, payload, packet) => {
      got.push([topic, payload.toString(), packet.qos]);
      if (got.length === 2) resolve();
    });
  });
  await sub.subscribeAsync(`js/${version}/#`, { qos: 1 });
  await pub.publishAsync(`js/${version}/zero`, "qos0 from mqtt.js", { qos: 0 });
  await pub.publishAsync(`js/${version}/one`, "qos1 from mqtt.js", { qos: 1 }); // PUBACK
  await all;
  got.sort((a, b) => a[2] - b[2]);
  const want = [[`js/${version}/zero`, "qos0 from mqtt.js", 0], [`js/${version}/one`, "qos1 from mqtt.js", 1]];
  if (JSON.stringify(got) !== JSON.stringify(want))
    throw new Error(`MQTT ${version}: got ${JSON.stringify(got)}`);
  await sub.endAsync();
  await pub.endAsync();
  console.log(`ok   MQTT.js over WebSocket, protocol version ${version}`);
}

const timer = setTimeout(() => { console.error("FAIL: timed out"); process.exit(1); }, 10000);
(async () => {
  for (const v of [4, 5]) await round(v);
  clearTimeout(timer);
})().catch((e) => { console.error("FAIL:", e.message || e); process.exit(1); });
