// A subscription's position in its channel's history: its epoch and the last offset delivered
// to the application. It decides what to ask for on resume (`since`) and drops any message at
// or below the last delivered offset, so replays after a reconnect never deliver a message
// twice or out of order. Mirrors clients/rust/src/cursor.rs.

/** What a subscribe ack means for the subscription. */
export const Outcome = Object.freeze({
  STARTED: 'started',
  RECOVERED: 'recovered',
  RECOVERY_FAILED: 'recovery_failed',
});

export class Cursor {
  constructor() {
    /** @type {string | null} */
    this.epoch = null;
    /** @type {number | null} */
    this.last = null;
  }

  /** The `since` to send when (re)subscribing: known once an epoch and an offset are. */
  since() {
    return this.epoch !== null && this.last !== null
      ? { offset: this.last, epoch: this.epoch }
      : null;
  }

  /** Applies a subscribe ack (`offset`, `epoch`, `recovered` may each be undefined). */
  onAck(offset, epoch, recovered) {
    const epochChanged = this.epoch !== null && epoch !== undefined && epoch !== this.epoch;
    if (epoch !== undefined) this.epoch = epoch;
    if (epochChanged) {
      // Offsets of the old epoch mean nothing in the new one: restart from the ack.
      this.last = offset ?? null;
      return Outcome.RECOVERY_FAILED;
    }
    if (recovered === undefined) {
      // Live messages may have raced ahead of the ack; never move backwards.
      if (offset !== undefined) this.last = this.last === null ? offset : Math.max(this.last, offset);
      return Outcome.STARTED;
    }
    return recovered ? Outcome.RECOVERED : Outcome.RECOVERY_FAILED;
  }

  /** How many offsets were skipped before `offset` (0 while the position is unknown). */
  missedBefore(offset) {
    return this.last !== null && offset > this.last ? offset - this.last - 1 : 0;
  }

  /** Whether a message at `offset` is new and must be delivered; records it when it is. */
  accept(offset) {
    if (this.last !== null && offset <= this.last) return false;
    this.last = offset;
    return true;
  }
}
