/**
 * One served state's fan-out to browsers: follows the state's view map
 * (`changes`, and a fresh snapshot every tick), encodes the snapshot frame
 * of each owner's view once per generation, and offers it to every
 * connection subscribed to the state; an owner that left becomes a
 * `removed` message. Every tick it also sends the `synced` message (the
 * owners held, their generations and how stale each is on this node), which
 * keeps the browsers' staleness honest and lists every owner (a browser
 * drops owners it no longer finds there). A connection that joins gets the
 * frames of the map as last fanned out, then a complete `synced`, in one
 * synchronous step: the frames it misses are exactly those offered after.
 * @internal
 */
import { Result } from "effect"
import type * as DistributedState from "../../DistributedState.ts"
import * as Generation from "../../Generation.ts"
import { encodeFrame, type StateCodec } from "../../internal/codec.ts"
import type { NodeId } from "../../NodeId.ts"
import type { StateView, ViewMap } from "../../StateView.ts"
import { controlFrame } from "./frames.ts"
import type { SyncedView } from "./protocol.ts"

/** What a feed needs of a connection. */
export interface Subscriber {
  /** Offers a view's snapshot frame unless a frame of that generation or a newer one was offered (`force`: even then). */
  readonly offerView: (state: string, owner: NodeId, generation: Generation.Generation, frame: Uint8Array, force?: boolean) => void
  /** Offers an owner's removal (which supersedes its queued snapshot). */
  readonly offerRemoved: (state: string, owner: NodeId, frame: Uint8Array) => void
  /** Offers a control frame, superseding the queued one of the same key when given. */
  readonly offerControl: (frame: Uint8Array, key?: string) => void
}

export interface Feed {
  readonly name: string
  /** Follows a new view map: offers the frames of what changed to every subscriber. */
  readonly reconcile: (views: ViewMap<unknown>) => void
  /** The `synced` frame of the map as last fanned out (`complete`: it lists every owner held). */
  readonly synced: (complete: boolean) => Uint8Array
  /** Sends a joining subscriber the map as last fanned out and a complete `synced`, and subscribes it. */
  readonly join: (subscriber: Subscriber) => void
  readonly leave: (subscriber: Subscriber) => void
  /** Offers `owner`'s current snapshot again to one subscriber (its gap). */
  readonly resend: (subscriber: Subscriber, owner: NodeId) => void
  readonly subscribers: () => number
}

export interface Env {
  readonly definition: DistributedState.Any
  readonly codec: StateCodec<unknown, unknown, unknown>
  readonly self: NodeId
  readonly maxFrameBytes: number
  /** This node's monotonic milliseconds (the clock of `StateView.syncedAt`). */
  readonly monotonicNow: () => number
  /** Reports a view that could not be sent (too large, or its schema refused it). */
  readonly onEncodeFailure: (owner: NodeId, reason: string) => void
}

export const make = (env: Env): Feed => {
  const name = env.definition.name
  const subscribers = new Set<Subscriber>()
  let current: ViewMap<unknown> = new Map()
  const cache = new Map<NodeId, { readonly generation: Generation.Generation; readonly frame: Uint8Array }>()

  /** The snapshot frame of a view, encoded once per generation; `undefined` when it cannot be sent. */
  const frameOf = (view: StateView<unknown>): Uint8Array | undefined => {
    const cached = cache.get(view.source)
    if (cached !== undefined && Generation.equals(cached.generation, view.generation)) return cached.frame
    const payload = env.codec.encodeViewShared(view.value) // copied into the frame at once
    if (Result.isFailure(payload)) {
      env.onEncodeFailure(view.source, payload.failure.message)
      return undefined
    }
    const frame = encodeFrame({
      _tag: "FullSnapshot",
      stateName: name,
      source: view.source,
      generation: view.generation,
      wireVersion: env.definition.wireVersion,
      createdAt: view.createdAt,
      modifiedAt: view.modifiedAt,
      payload: payload.success
    }, env.maxFrameBytes)
    if (Result.isFailure(frame)) {
      env.onEncodeFailure(view.source, frame.failure.message)
      return undefined
    }
    cache.set(view.source, { generation: view.generation, frame: frame.success })
    return frame.success
  }

  const reconcile = (views: ViewMap<unknown>) => {
    const previous = current
    current = views
    // Nobody to tell: nothing is encoded (a joining subscriber gets the frames of `current`).
    if (subscribers.size === 0) {
      for (const owner of cache.keys()) if (!views.has(owner)) cache.delete(owner)
      return
    }
    for (const [owner, view] of views) {
      const before = previous.get(owner)
      if (before !== undefined && Generation.equals(before.generation, view.generation)) continue
      const frame = frameOf(view)
      if (frame === undefined) continue
      for (const subscriber of subscribers) subscriber.offerView(name, owner, view.generation, frame)
    }
    for (const owner of previous.keys()) {
      if (views.has(owner)) continue
      cache.delete(owner)
      const frame = controlFrame({ t: "removed", state: name, owner })
      for (const subscriber of subscribers) subscriber.offerRemoved(name, owner, frame)
    }
  }

  const synced = (complete: boolean) => {
    const now = env.monotonicNow()
    const views: Array<SyncedView> = []
    for (const [owner, view] of current) {
      views.push({
        owner,
        incarnation: view.generation.incarnation,
        age: view.generation.age,
        stalenessMillis: owner === env.self ? 0 : Math.max(0, now - view.syncedAt),
        ...(view.pendingRemote === undefined
          ? {}
          : { pending: { incarnation: view.pendingRemote.incarnation, age: view.pendingRemote.age } })
      })
    }
    return controlFrame({ t: "synced", state: name, complete, views })
  }

  const join = (subscriber: Subscriber) => {
    subscribers.add(subscriber)
    for (const [owner, view] of current) {
      const frame = frameOf(view)
      if (frame !== undefined) subscriber.offerView(name, owner, view.generation, frame)
    }
    subscriber.offerControl(synced(true), `synced:${name}`)
  }

  const resend = (subscriber: Subscriber, owner: NodeId) => {
    const view = current.get(owner)
    if (view === undefined) return
    const frame = frameOf(view)
    if (frame !== undefined) subscriber.offerView(name, owner, view.generation, frame, true)
  }

  return {
    name,
    reconcile,
    synced,
    join,
    leave: (subscriber) => {
      subscribers.delete(subscriber)
    },
    resend,
    subscribers: () => subscribers.size
  }
}
