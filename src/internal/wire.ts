/**
 * The envelope codec: SyncMessage <-> bytes, written by hand for speed. The
 * envelope is fixed by this module; state payloads inside it are opaque bytes
 * produced by the states' own schemas. Decoding checks every bound and every
 * value the `SyncMessage` schemas would (non-empty node ids, non-negative
 * safe-integer generations, finite timestamps, valid UTF-8, no trailing
 * bytes), and allocates nothing larger than the input.
 *
 * Layout (big endian):
 *
 * ```text
 * u8 tag (1 FullSnapshot, 2 DeltaUpdate, 3 RequestSnapshot, 4 BatchedChangeFeed)
 * FullSnapshot:      str stateName, str source, gen, f64 wireVersion, f64 createdAt, f64 modifiedAt, bytes payload
 * DeltaUpdate:       str stateName, str source, gen, f64 wireVersion, f64 modifiedAt, bytes payload
 * RequestSnapshot:   str stateName, str source, u8 hasGeneration, [gen], f64 wireVersion
 * BatchedChangeFeed: str source, u32 count, count x (str stateName, str source, gen)
 * str = u32 length + UTF-8, bytes = u32 length + raw, gen = f64 incarnation + f64 age
 * ```
 * @internal
 */
import { Result } from "effect"
import type { Generation } from "../Generation.ts"
import type { NodeId } from "../NodeId.ts"
import { BatchedChangeFeed, DeltaUpdate, FullSnapshot, RequestSnapshot, type SyncMessage } from "../SyncMessage.ts"

const FULL = 1
const DELTA = 2
const REQUEST = 3
const FEED = 4

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })

const utf8Length = (s: string): number => {
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) n += 1
    else if (c < 0x800) n += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4
        i++
      } else n += 3
    } else n += 3
  }
  return n
}

const strSize = (s: string) => 4 + utf8Length(s)
const GEN = 16

/** The encoded size of a message's body. */
const sizeOf = (m: SyncMessage): number => {
  switch (m._tag) {
    case "FullSnapshot":
      return 1 + strSize(m.stateName) + strSize(m.source) + GEN + 24 + 4 + m.payload.length
    case "DeltaUpdate":
      return 1 + strSize(m.stateName) + strSize(m.source) + GEN + 16 + 4 + m.payload.length
    case "RequestSnapshot":
      return 1 + strSize(m.stateName) + strSize(m.source) + 1 + (m.generation === undefined ? 0 : GEN) + 8
    case "BatchedChangeFeed": {
      let n = 1 + strSize(m.source) + 4
      for (const notice of m.notices) n += strSize(notice.stateName) + strSize(notice.source) + GEN
      return n
    }
  }
}

class Writer {
  readonly bytes: Uint8Array
  readonly view: DataView
  pos: number
  constructor(bytes: Uint8Array, offset: number) {
    this.bytes = bytes
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    this.pos = offset
  }
  u8(v: number) {
    this.bytes[this.pos++] = v
  }
  u32(v: number) {
    this.view.setUint32(this.pos, v)
    this.pos += 4
  }
  f64(v: number) {
    this.view.setFloat64(this.pos, v)
    this.pos += 8
  }
  str(s: string) {
    const at = this.pos
    this.pos += 4
    const { written } = encoder.encodeInto(s, this.bytes.subarray(this.pos))
    this.view.setUint32(at, written)
    this.pos += written
  }
  raw(b: Uint8Array) {
    this.u32(b.length)
    this.bytes.set(b, this.pos)
    this.pos += b.length
  }
  gen(g: Generation) {
    this.f64(g.incarnation)
    this.f64(g.age)
  }
}

/**
 * Encodes a message into a new buffer with `offset` free bytes in front (for
 * the frame header). Returns the buffer; the body is `[offset, length)`.
 */
export const encode = (m: SyncMessage, offset: number): Uint8Array => {
  const out = new Uint8Array(offset + sizeOf(m))
  const w = new Writer(out, offset)
  switch (m._tag) {
    case "FullSnapshot":
      w.u8(FULL)
      w.str(m.stateName)
      w.str(m.source)
      w.gen(m.generation)
      w.f64(m.wireVersion)
      w.f64(m.createdAt)
      w.f64(m.modifiedAt)
      w.raw(m.payload)
      break
    case "DeltaUpdate":
      w.u8(DELTA)
      w.str(m.stateName)
      w.str(m.source)
      w.gen(m.generation)
      w.f64(m.wireVersion)
      w.f64(m.modifiedAt)
      w.raw(m.payload)
      break
    case "RequestSnapshot":
      w.u8(REQUEST)
      w.str(m.stateName)
      w.str(m.source)
      if (m.generation === undefined) w.u8(0)
      else {
        w.u8(1)
        w.gen(m.generation)
      }
      w.f64(m.wireVersion)
      break
    case "BatchedChangeFeed":
      w.u8(FEED)
      w.str(m.source)
      w.u32(m.notices.length)
      for (const notice of m.notices) {
        w.str(notice.stateName)
        w.str(notice.source)
        w.gen(notice.generation)
      }
      break
  }
  return out
}

class DecodeError {
  readonly reason: string
  constructor(reason: string) {
    this.reason = reason
  }
}

class Reader {
  readonly bytes: Uint8Array
  readonly view: DataView
  pos = 0
  constructor(bytes: Uint8Array) {
    this.bytes = bytes
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }
  need(n: number, what: string) {
    if (this.bytes.length - this.pos < n) throw new DecodeError(`truncated ${what}`)
  }
  u8(what: string) {
    this.need(1, what)
    return this.bytes[this.pos++]
  }
  u32(what: string) {
    this.need(4, what)
    const v = this.view.getUint32(this.pos)
    this.pos += 4
    return v
  }
  f64(what: string) {
    this.need(8, what)
    const v = this.view.getFloat64(this.pos)
    this.pos += 8
    return v
  }
  finite(what: string) {
    const v = this.f64(what)
    if (!Number.isFinite(v)) throw new DecodeError(`${what} is not a finite number`)
    return v
  }
  int(what: string) {
    const v = this.f64(what)
    if (!Number.isSafeInteger(v)) throw new DecodeError(`${what} is not an integer`)
    return v
  }
  str(what: string) {
    const n = this.u32(what)
    this.need(n, what)
    const start = this.pos
    this.pos += n
    let ascii = true
    for (let i = start; i < this.pos; i++) {
      if (this.bytes[i] >= 0x80) {
        ascii = false
        break
      }
    }
    if (ascii) return latin1(this.bytes, start, this.pos)
    try {
      return decoder.decode(this.bytes.subarray(start, this.pos))
    } catch {
      throw new DecodeError(`${what} is not valid UTF-8`)
    }
  }
  node(what: string): NodeId {
    const s = this.str(what)
    if (s.length === 0) throw new DecodeError(`${what} is empty`)
    return s as NodeId
  }
  raw(what: string) {
    const n = this.u32(what)
    this.need(n, what)
    const out = this.bytes.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }
  gen(what: string): Generation {
    const incarnation = this.int(`${what} incarnation`)
    const age = this.int(`${what} age`)
    if (incarnation < 0 || age < 0) throw new DecodeError(`${what} is negative`)
    return { incarnation, age }
  }
}

const latin1 = (bytes: Uint8Array, start: number, end: number): string => {
  let s = ""
  for (let i = start; i < end; i += 4096) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, Math.min(end, i + 4096)) as unknown as Array<number>)
  }
  return s
}

/** Builds a message instance without re-running the schema checks the decoder already made. */
const instance = <T extends object>(ctor: { readonly prototype: T }, fields: object): T =>
  Object.assign(Object.create(ctor.prototype), fields)

const read = (bytes: Uint8Array): SyncMessage => {
  const r = new Reader(bytes)
  const tag = r.u8("tag")
  let message: SyncMessage
  switch (tag) {
    case FULL:
      message = instance(FullSnapshot, {
        _tag: "FullSnapshot",
        stateName: r.str("stateName"),
        source: r.node("source"),
        generation: r.gen("generation"),
        wireVersion: r.int("wireVersion"),
        createdAt: r.finite("createdAt"),
        modifiedAt: r.finite("modifiedAt"),
        payload: r.raw("payload")
      })
      break
    case DELTA:
      message = instance(DeltaUpdate, {
        _tag: "DeltaUpdate",
        stateName: r.str("stateName"),
        source: r.node("source"),
        generation: r.gen("generation"),
        wireVersion: r.int("wireVersion"),
        modifiedAt: r.finite("modifiedAt"),
        payload: r.raw("payload")
      })
      break
    case REQUEST: {
      const stateName = r.str("stateName")
      const source = r.node("source")
      const has = r.u8("generation flag")
      if (has > 1) throw new DecodeError("bad generation flag")
      const generation = has === 1 ? r.gen("generation") : undefined
      const wireVersion = r.int("wireVersion")
      message = instance(
        RequestSnapshot,
        generation === undefined
          ? { _tag: "RequestSnapshot", stateName, source, wireVersion }
          : { _tag: "RequestSnapshot", stateName, source, generation, wireVersion }
      )
      break
    }
    case FEED: {
      const source = r.node("source")
      const count = r.u32("notice count")
      // Each notice takes at least 4 + 4 + 1 + 16 bytes: reject counts the input cannot hold before allocating.
      if (count > (bytes.length - r.pos) / 25) throw new DecodeError(`notice count ${count} exceeds the frame`)
      const notices = new Array(count)
      for (let i = 0; i < count; i++) {
        notices[i] = { stateName: r.str("notice stateName"), source: r.node("notice source"), generation: r.gen("notice generation") }
      }
      message = instance(BatchedChangeFeed, { _tag: "BatchedChangeFeed", source, notices })
      break
    }
    default:
      throw new DecodeError(`unknown message tag ${tag}`)
  }
  if (r.pos !== bytes.length) throw new DecodeError(`${bytes.length - r.pos} trailing bytes`)
  return message
}

/** Decodes a message body. */
export const decode = (bytes: Uint8Array): Result.Result<SyncMessage, string> => {
  try {
    return Result.succeed(read(bytes))
  } catch (e) {
    if (e instanceof DecodeError) return Result.fail(e.reason)
    throw e
  }
}
