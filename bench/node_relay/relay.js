// The bench's reference: the minimal socket.io relay a team would write instead of our server.
// Same wire protocol as ours for what the bench uses: /monitor `session.start` and `telemetry`
// {session_id, frames} with an ack; /dashboard `join` {session_id}, then `telemetry` re-emitted
// to the room as it arrives. No storage, no validation, no coalescing; socket.io's defaults
// (so permessage-deflate is declined, as socket.io 4 does unless told otherwise).
const { randomUUID } = require("node:crypto");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 3000);
const io = new Server(port, { maxHttpBufferSize: 1e6 });
const viewers = io.of("/dashboard");

io.of("/monitor").on("connection", (socket) => {
  socket.on("session.start", (_msg, ack) => ack({ ok: true, session: { session_id: randomUUID() } }));
  socket.on("telemetry", (msg, ack) => {
    viewers.to(msg.session_id).emit("telemetry", msg);
    const frames = msg.frames || [];
    ack({ ok: true, acked_seq: frames.length ? frames[frames.length - 1].seq : null, rejected: [] });
  });
});
viewers.on("connection", (socket) => {
  socket.on("join", (msg, ack) => { socket.join(msg.session_id); ack({ ok: true }); });
});
console.log(`node relay listening on ${port}`);
