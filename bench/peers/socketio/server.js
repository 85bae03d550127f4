// The Socket.IO 4 peer that wsfleet-bench measures: one process is one node; nodes share a
// redis-server through @socket.io/redis-adapter, so a publish on one node reaches rooms on all.
//
// Events (the bench's socketio adapter speaks them over a raw Engine.IO v4 WebSocket):
//   "subscribe" room        -> joins the room, acks {ok: true}
//   "publish" {room, data}  -> emits "message" data to the room on every node, acks {ok: true}
//
// Environment: PORT (required), HOST (default 127.0.0.1), REDIS_URL (required).
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const Redis = require("ioredis");

const port = Number(process.env.PORT);
const host = process.env.HOST || "127.0.0.1";
const redisUrl = process.env.REDIS_URL;
if (!Number.isInteger(port) || port <= 0 || !redisUrl) {
  console.error("usage: PORT=<port> REDIS_URL=redis://127.0.0.1:<port> node server.js");
  process.exit(2);
}

const pub = new Redis(redisUrl);
const sub = pub.duplicate();
for (const client of [pub, sub]) {
  client.on("error", (err) => console.error(`redis: ${err.message}`));
}

const httpServer = http.createServer((req, res) => {
  // Liveness for the bench script; everything else is Socket.IO's.
  if (req.url === "/healthz") {
    res.writeHead(200).end("ok\n");
  }
});

// Tuned for the comparison: WebSocket only (no long-polling upgrade dance), no compression,
// a small message cap, no client bundle.
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  httpCompression: false,
  maxHttpBufferSize: 64 * 1024,
  serveClient: false,
  adapter: createAdapter(pub, sub),
});

io.on("connection", (socket) => {
  socket.on("subscribe", (room, ack) => {
    if (typeof room !== "string" || room.length === 0) {
      if (typeof ack === "function") ack({ ok: false, error: "room must be a non-empty string" });
      return;
    }
    socket.join(room);
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.on("publish", (msg, ack) => {
    if (!msg || typeof msg.room !== "string") {
      if (typeof ack === "function") ack({ ok: false, error: "publish needs {room, data}" });
      return;
    }
    io.to(msg.room).emit("message", msg.data);
    if (typeof ack === "function") ack({ ok: true });
  });
});

httpServer.listen(port, host, () => console.error(`socket.io node listening on ${host}:${port}`));

function shutdown() {
  io.close();
  pub.disconnect();
  sub.disconnect();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
