/**
 * Reading message bodies (the layout is in `internal/wire.ts`), for the
 * node's decoder (`internal/wire.ts`) and the browser's
 * (`web/internal/frames.ts`), which must read the same bytes the same way.
 * No Node API in here, so the browser bundle takes it as is; each side gives
 * the UTF-8 check it can afford (`Text`).
 * @internal
 */
import { Result } from "effect"
import type { Generation } from "../Generation.ts"
import type { NodeId } from "../NodeId.ts"
import {
  Acknowledge,
  AckRequest,
  BatchedChangeFeed,
  DeltaUpdate,
  FullSnapshot,
  RequestSnapshot,
  type SyncMessage
} from "../SyncMessage.ts"

/** The text of `bytes[start, end)` when it is well-formed UTF-8, else `undefined`. */
export type Text = (bytes: Uint8Array, start: number, end: number) => string | undefined

const empty = new Uint8Array(0)

/** The message tags (the first byte of a body). */
export const tagFull = 1
export const tagDelta = 2
export const tagRequest = 3
export const tagFeed = 4
export const tagAckRequest = 5
export const tagAck = 6

/**
 * Reads fields in order. The first failed check is recorded in `error`; every
 * later read returns a placeholder, so a message can be assembled field by
 * field and dropped at the end when `error` is set.
 */
export class Reader {
  readonly bytes: Uint8Array
  readonly view: DataView
  pos = 0
  error: string | undefined = undefined
  /** Whether payloads are copied out of the input (else they are views into it). */
  readonly copy: boolean
  readonly #text: Text
  constructor(bytes: Uint8Array, copy: boolean, text: Text) {
    this.bytes = bytes
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    this.copy = copy
    this.#text = text
  }
  fail(reason: string): void {
    if (this.error === undefined) this.error = reason
  }
  need(n: number, what: string): boolean {
    if (this.error !== undefined) return false
    if (this.bytes.length - this.pos < n) {
      this.error = `truncated ${what}`
      return false
    }
    return true
  }
  u8(what: string): number {
    if (!this.need(1, what)) return 0
    return this.bytes[this.pos++]
  }
  u32(what: string): number {
    if (!this.need(4, what)) return 0
    const v = this.view.getUint32(this.pos)
    this.pos += 4
    return v
  }
  f64(what: string): number {
    if (!this.need(8, what)) return 0
    const v = this.view.getFloat64(this.pos)
    this.pos += 8
    return v
  }
  finite(what: string): number {
    const v = this.f64(what)
    if (!Number.isFinite(v)) this.fail(`${what} is not a finite number`)
    return v
  }
  int(what: string): number {
    const v = this.f64(what)
    if (!Number.isSafeInteger(v)) this.fail(`${what} is not an integer`)
    return v
  }
  str(what: string): string {
    const n = this.u32(what)
    if (!this.need(n, what)) return ""
    const start = this.pos
    this.pos = start + n
    const text = this.#text(this.bytes, start, start + n)
    if (text === undefined) {
      this.fail(`${what} is not valid UTF-8`)
      return ""
    }
    return text
  }
  node(what: string): NodeId {
    const s = this.str(what)
    if (s.length === 0) this.fail(`${what} is empty`)
    return s as NodeId
  }
  /** The next `length`-prefixed bytes: a copy, or a view into the input when `copy` is off. */
  raw(what: string): Uint8Array {
    const n = this.u32(what)
    if (!this.need(n, what)) return empty
    const out = this.copy ? this.bytes.slice(this.pos, this.pos + n) : this.bytes.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }
  gen(what: string): Generation {
    const incarnation = this.int(`${what} incarnation`)
    const age = this.int(`${what} age`)
    if (incarnation < 0 || age < 0) this.fail(`${what} is negative`)
    return { incarnation, age }
  }
}

/** Builds a message instance without re-running the schema checks the decoder already made. */
const instance = <T extends object>(ctor: { readonly prototype: T }, fields: object): T =>
  Object.assign(Object.create(ctor.prototype), fields)

const read = (r: Reader, protocol: number): SyncMessage | undefined => {
  const tag = r.u8("tag")
  // The protocol byte goes with the tag: the acknowledgement messages travel under 2, every other under 1.
  if (tag >= tagFull && tag <= tagFeed && protocol !== 1) {
    r.fail(`message tag ${tag} needs protocol version 1`)
    return undefined
  }
  switch (tag) {
    case tagFull:
      return instance(FullSnapshot, {
        _tag: "FullSnapshot",
        stateName: r.str("stateName"),
        source: r.node("source"),
        generation: r.gen("generation"),
        wireVersion: r.int("wireVersion"),
        createdAt: r.finite("createdAt"),
        modifiedAt: r.finite("modifiedAt"),
        payload: r.raw("payload")
      })
    case tagDelta:
      return instance(DeltaUpdate, {
        _tag: "DeltaUpdate",
        stateName: r.str("stateName"),
        source: r.node("source"),
        generation: r.gen("generation"),
        wireVersion: r.int("wireVersion"),
        modifiedAt: r.finite("modifiedAt"),
        payload: r.raw("payload")
      })
    case tagRequest: {
      const stateName = r.str("stateName")
      const source = r.node("source")
      const has = r.u8("generation flag")
      if (has > 1) r.fail("bad generation flag")
      const generation = has === 1 ? r.gen("generation") : undefined
      const wireVersion = r.int("wireVersion")
      return instance(
        RequestSnapshot,
        generation === undefined
          ? { _tag: "RequestSnapshot", stateName, source, wireVersion }
          : { _tag: "RequestSnapshot", stateName, source, generation, wireVersion }
      )
    }
    case tagFeed: {
      const source = r.node("source")
      const count = r.u32("notice count")
      // Each notice takes at least 4 + 4 + 1 + 16 bytes: reject counts the input cannot hold before allocating.
      if (count > (r.bytes.length - r.pos) / 25) {
        r.fail(`notice count ${count} exceeds the frame`)
        return undefined
      }
      const notices = new Array(count)
      for (let i = 0; i < count && r.error === undefined; i++) {
        notices[i] = { stateName: r.str("notice stateName"), source: r.node("notice source"), generation: r.gen("notice generation") }
      }
      return instance(BatchedChangeFeed, { _tag: "BatchedChangeFeed", source, notices })
    }
    case tagAckRequest:
    case tagAck: {
      if (protocol !== 2) {
        r.fail(`message tag ${tag} needs protocol version 2`)
        return undefined
      }
      const fields = { stateName: r.str("stateName"), source: r.node("source"), generation: r.gen("generation") }
      return tag === tagAckRequest
        ? instance(AckRequest, { _tag: "AckRequest", ...fields })
        : instance(Acknowledge, { _tag: "Acknowledge", ...fields })
    }
    default:
      r.fail(`unknown message tag ${tag}`)
      return undefined
  }
}

/**
 * Decodes a message body; the failure is the reason it is not a message. A
 * payload is copied with `copyPayload`, else a view into `bytes`. `protocol`
 * is the frame's protocol version: the acknowledgement messages decode only
 * under version 2.
 */
export const decode = (
  bytes: Uint8Array,
  text: Text,
  copyPayload: boolean,
  protocol: number
): Result.Result<SyncMessage, string> => {
  const r = new Reader(bytes, copyPayload, text)
  const message = read(r, protocol)
  if (r.pos !== bytes.length) r.fail(`${bytes.length - r.pos} trailing bytes`)
  return r.error !== undefined || message === undefined ? Result.fail(r.error ?? "undecodable") : Result.succeed(message)
}
