// The link state: whether the car's monitor is connected, how old the newest
// frame is, the monitor's backlog and round trip, the frame rate, and values
// relayed over the LoRa radio while the main link is down (with their age).
//
// A component: it fills whatever element holds the link_state markup
// (templates/live_parts.html), finding its parts by data-link, so the live
// page and a pit-wall screen use the same one; its look is .link-state in
// dashboard.css.
import { fmtAge, setText } from "../common.js";

export class LinkState {
  constructor(root) {
    const part = (name) => root.querySelector(`[data-link="${name}"]`);
    this.els = {
      monitor: part("monitor"),
      age: part("age"),
      backlog: part("backlog"),
      rtt: part("rtt"),
      rate: part("rate"),
      lora: part("lora"),
    };
  }

  /**
   * Show the link as it stands: monitor {online (null: unknown), backlog, rtt_ms},
   * lastT (newest frame's time) and loraT (newest LoRa values' time) against
   * `now` (all epoch seconds on the server's clock), rate in frames per second.
   */
  render({ monitor, lastT, loraT, now, rate }) {
    const e = this.els;
    e.monitor.dataset.online = String(monitor.online);
    setText(e.monitor, monitor.online === null ? "unknown" : monitor.online ? "online" : "offline");
    setText(e.age, lastT === null ? "—" : `${fmtAge(now - lastT)} ago`);
    setText(e.backlog, monitor.backlog === null || monitor.backlog === undefined ? "—" : `${monitor.backlog} frames`);
    setText(e.rtt, monitor.rtt_ms === null || monitor.rtt_ms === undefined ? "—" : `${Math.round(monitor.rtt_ms)} ms`);
    setText(e.rate, rate === null ? "—" : `${rate.toFixed(1)} Hz`);
    const viaLora = loraT !== null && loraT !== undefined && (lastT === null || loraT > lastT);
    e.lora.hidden = !viaLora;
    if (viaLora) setText(e.lora, `via LoRa, ${fmtAge(now - loraT)} old`);
  }
}
