// The pit wall on the live page: the current driver, the stint time, the fuel (percent, litres, laps
// left), and the team page's panel (driver change, refill, stints: team/pitwall.js). Read from this
// session's team row (GET /team?session_id=, from the server's memory) every few seconds while the page is shown;
// the stint time runs on between reads. Hidden while the session is not active (no team row).
import { apiGet, fmtDuration, setText } from "../common.js";
import { pitWallPanel } from "../team/pitwall.js";

const POLL_MS = 3000;

export class LivePitWall {
  constructor(sessionId) {
    this.sessionId = sessionId;
    this.box = document.getElementById("live-pitwall");
    this.details = document.getElementById("pw-details");
    this.row = null;
    this.seen = 0;
    this.panel = null;
    this.details.addEventListener("toggle", () => { if (this.details.open && this.panel) this.panel.refresh(this.row); });
    setInterval(() => { if (!document.hidden) this.poll(); }, POLL_MS);
    setInterval(() => { if (!document.hidden) this.show(); }, 1000);
    this.poll();
  }

  async poll() {
    try {
      const team = await apiGet(`/team?session_id=${encodeURIComponent(this.sessionId)}`);
      this.row = team.cars.find((c) => c.session_id === this.sessionId) || null;
      this.seen = Date.now();
    } catch {
      return; // the page's own banner tells when the server is away
    }
    if (this.row && !this.panel) {
      this.panel = pitWallPanel(this.sessionId, this.row.car_id, { status: document.getElementById("pw-status") });
      this.details.insertBefore(this.panel.node, document.getElementById("pw-status"));
    }
    if (this.row && this.details.open) this.panel.refresh(this.row);
    this.show();
  }

  show() {
    const r = this.row;
    this.box.hidden = !r;
    if (!r) return;
    const since = (Date.now() - this.seen) / 1000;
    setText(document.getElementById("pw-driver"), r.driver ? r.driver.name || r.driver.driver_id : "—");
    setText(document.getElementById("pw-stint"), r.stint ? fmtDuration(r.stint.elapsed_s + since)
      + (r.stint.left_s !== null ? ` (${fmtDuration(Math.max(0, r.stint.left_s - since))} left)` : "") : "—");
    const fuel = r.fuel;
    const level = fuel && fuel.level !== null
      ? `${Math.round(fuel.percent ?? fuel.level)} %` + (fuel.unit !== "%" ? ` · ${fuel.level.toFixed(1)} l` : "") : "—";
    setText(document.getElementById("pw-fuel"), level);
    setText(document.getElementById("pw-fuel-laps"), fuel && fuel.laps_left !== null ? `${fuel.laps_left.toFixed(1)} laps` : "—");
  }
}
