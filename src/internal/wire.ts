/**
 * The envelope codec: SyncMessage <-> bytes, written by hand for speed. The
 * envelope is fixed by this module; state payloads inside it are opaque bytes
 * produced by the states' own schemas. Decoding checks every bound and every
 * value the `SyncMessage` schemas would (non-empty node ids, non-negative
 * safe-integer generations, safe-integer wire versions, finite timestamps,
 * well-formed UTF-8, no trailing bytes), never throws, and allocates nothing
 * larger than the input.
 *
 * Strings are checked with Node's `buffer.isUtf8`, which accepts exactly what a
 * fatal `TextDecoder` does. A plain loop looks for a non-ASCII byte first: the
 * names on the wire (state names, node ids) are short and almost always ASCII,
 * and for those the loop plus a `fromCharCode` decode costs less than the
 * `subarray` view and native call `isUtf8` needs (measured at about 15-20 ns
 * against 55 ns for a 6-14 byte name on Node 24). Only a string with a
 * non-ASCII byte goes to `isUtf8` and then to `TextDecoder`.
 *
 * Layout (big endian):
 *
 * ```text
 * u8 tag (1 FullSnapshot, 2 DeltaUpdate, 3 RequestSnapshot, 4 BatchedChangeFeed, 5 AckRequest, 6 Acknowledge)
 * FullSnapshot:      str stateName, str source, gen, f64 wireVersion, f64 createdAt, f64 modifiedAt, bytes payload
 * DeltaUpdate:       str stateName, str source, gen, f64 wireVersion, f64 modifiedAt, bytes payload
 * RequestSnapshot:   str stateName, str source, u8 hasGeneration, [gen], f64 wireVersion
 * BatchedChangeFeed: str source, u32 count, count x (str stateName, str source, gen)
 * AckRequest:        str stateName, str source, gen      (protocol version 2 only)
 * Acknowledge:       str stateName, str source, gen      (protocol version 2 only)
 *
 * The frame's protocol byte goes with the tag: tags 1 to 4 only under
 * protocol 1, tags 5 and 6 only under protocol 2 (so a flipped protocol byte
 * never lets a frame through).
 * str = u32 length + UTF-8, bytes = u32 length + raw, gen = f64 incarnation + f64 age
 * ```
 * @internal
 */
import { Result } from "effect"
import { isUtf8 } from "node:buffer"
import type { Generation } from "../Generation.ts"
import * as Body from "./reader.ts"
import { tagAck, tagAckRequest, tagDelta, tagFeed, tagFull, tagRequest } from "./reader.ts"
import type { SyncMessage } from "../SyncMessage.ts"

/**
 * The fields of a message, as the encoder reads them: every `SyncMessage` is
 * one, and so is a plain object with the same fields (the send path builds
 * those, skipping the class constructors' checks on values it made itself).
 */
export type Envelope =
  | {
    readonly _tag: "FullSnapshot"
    readonly stateName: string
    readonly source: string
    readonly generation: Generation
    readonly wireVersion: number
    readonly createdAt: number
    readonly modifiedAt: number
    readonly payload: Uint8Array
  }
  | {
    readonly _tag: "DeltaUpdate"
    readonly stateName: string
    readonly source: string
    readonly generation: Generation
    readonly wireVersion: number
    readonly modifiedAt: number
    readonly payload: Uint8Array
  }
  | {
    readonly _tag: "RequestSnapshot"
    readonly stateName: string
    readonly source: string
    readonly generation?: Generation | undefined
    readonly wireVersion: number
  }
  | {
    readonly _tag: "BatchedChangeFeed"
    readonly source: string
    readonly notices: ReadonlyArray<{ readonly stateName: string; readonly source: string; readonly generation: Generation }>
  }
  | {
    readonly _tag: "AckRequest" | "Acknowledge"
    readonly stateName: string
    readonly source: string
    readonly generation: Generation
  }


/** Whether a message needs protocol version 2 (the acknowledgement messages). */
export const needsAckProtocol = (m: Envelope): boolean => m._tag === "AckRequest" || m._tag === "Acknowledge"

const encoder = new TextEncoder()
// Only ever given well-formed UTF-8 (checked first), so it never substitutes; a leading BOM is kept as U+FEFF.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true })

/** Strings up to this many code units are written one character at a time when they are ASCII. */
const inlineAscii = 64

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
export const sizeOf = (m: Envelope): number => {
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
    case "AckRequest":
    case "Acknowledge":
      return 1 + strSize(m.stateName) + strSize(m.source) + GEN
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
    if (s.length <= inlineAscii) {
      const bytes = this.bytes
      let pos = this.pos
      let i = 0
      for (; i < s.length; i++) {
        const c = s.charCodeAt(i)
        if (c >= 0x80) break
        bytes[pos++] = c
      }
      if (i === s.length) {
        this.view.setUint32(at, s.length)
        this.pos = pos
        return
      }
    }
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
 * Encodes a message into `out` from `offset`, which must leave exactly
 * `sizeOf(m)` bytes (the caller writes anything in front, such as a frame
 * header).
 */
export const encodeInto = (m: Envelope, out: Uint8Array, offset: number): void => {
  const w = new Writer(out, offset)
  switch (m._tag) {
    case "FullSnapshot":
      w.u8(tagFull)
      w.str(m.stateName)
      w.str(m.source)
      w.gen(m.generation)
      w.f64(m.wireVersion)
      w.f64(m.createdAt)
      w.f64(m.modifiedAt)
      w.raw(m.payload)
      break
    case "DeltaUpdate":
      w.u8(tagDelta)
      w.str(m.stateName)
      w.str(m.source)
      w.gen(m.generation)
      w.f64(m.wireVersion)
      w.f64(m.modifiedAt)
      w.raw(m.payload)
      break
    case "RequestSnapshot":
      w.u8(tagRequest)
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
      w.u8(tagFeed)
      w.str(m.source)
      w.u32(m.notices.length)
      for (const notice of m.notices) {
        w.str(notice.stateName)
        w.str(notice.source)
        w.gen(notice.generation)
      }
      break
    case "AckRequest":
    case "Acknowledge":
      w.u8(m._tag === "AckRequest" ? tagAckRequest : tagAck)
      w.str(m.stateName)
      w.str(m.source)
      w.gen(m.generation)
      break
  }
}

/** Encodes a message into a new buffer with `offset` free bytes in front; the body is `[offset, length)`. */
export const encode = (m: Envelope, offset: number): Uint8Array => {
  const out = new Uint8Array(offset + sizeOf(m))
  encodeInto(m, out, offset)
  return out
}

/** The node's UTF-8 check: ASCII by a scan (most names), the rest by `buffer.isUtf8`. */
const text = (bytes: Uint8Array, start: number, end: number): string | undefined => {
  for (let i = start; i < end; i++) {
    if (bytes[i] >= 0x80) {
      const utf8 = bytes.subarray(start, end)
      return isUtf8(utf8) ? decoder.decode(utf8) : undefined
    }
  }
  return latin1(bytes, start, end)
}


const latin1 = (bytes: Uint8Array, start: number, end: number): string => {
  if (end - start <= inlineAscii) {
    let s = ""
    for (let i = start; i < end; i++) s += String.fromCharCode(bytes[i])
    return s
  }
  let s = ""
  for (let i = start; i < end; i += 4096) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, Math.min(end, i + 4096)) as unknown as Array<number>)
  }
  return s
}

/**
 * Decodes a message body; the failure is the reason it is not a message. By
 * default a payload is copied, so the message never aliases `bytes`; with
 * `copyPayload: false` it is a view into `bytes` (no copy of a large view).
 * `protocol` is the frame's protocol version: the acknowledgement messages
 * decode only under version 2.
 */
export const decode = (bytes: Uint8Array, copyPayload = true, protocol = 1): Result.Result<SyncMessage, string> =>
  Body.decode(bytes, text, copyPayload, protocol)
