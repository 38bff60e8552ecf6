"""The in-car monitor: sources (OBD, GPS, replay), frame assembler, outbox, uplink, service manager.

```
 sources (threads) ──► ChannelStore (latest value + age) ──► FrameAssembler (10 Hz)
                                                                  │ append (seq)
                                                                  ▼
 server /monitor ◄── Uplink (socketio.Client, acks) ◄──────── Outbox (SQLite WAL on disk)
```
The ServiceManager (monitor.py) wires them and isolates failures.
"""
