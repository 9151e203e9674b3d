/**
 * The field reader of the frame decoders: the node's (`internal/wire.ts`) and
 * the browser's (`web/internal/frames.ts`), which must read the same bytes
 * the same way. No Node API in here, so the browser bundle takes it as is;
 * each side gives the UTF-8 check it can afford (`Text`).
 * @internal
 */
import type { Generation } from "../Generation.ts"
import type { NodeId } from "../NodeId.ts"

/** The text of `bytes[start, end)` when it is well-formed UTF-8, else `undefined`. */
export type Text = (bytes: Uint8Array, start: number, end: number) => string | undefined

const empty = new Uint8Array(0)

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

