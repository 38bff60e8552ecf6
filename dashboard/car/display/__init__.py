"""The driver display: a page the car's monitor serves for a screen or a phone on the dash.

``server.DriverDisplay`` serves it with the standard library (the car installs no web framework);
``routes`` answers each request (the page, its assets, the state it polls, the driver's seen and
answer); ``static/`` holds the page, shipped inside the package (no CDN: a car has no internet).

    chromium --kiosk ──HTTP──> DriverDisplay (thread) ──> routes.handle
                                                           ├─ CarMessages.pending / mark_seen / answer
                                                           ├─ CarTiming.snapshot (lap, delta: the car's own)
                                                           └─ link state (uplink, radio)
"""
from dashboard.car.display.server import DriverDisplay, parse_address

__all__ = ["DriverDisplay", "parse_address"]
