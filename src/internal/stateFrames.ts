/**
 * The frames a state sends: its snapshot (encoded once per generation and
 * shared by every peer), its deltas, and its snapshot requests, each sent
 * with the supersede key that lets an outbound queue drop what a newer
 * snapshot makes useless. Counts what it sends; a view that cannot be
 * encoded (or is larger than a frame may be) is logged and not sent.
 * @internal
 */
import { Effect, Result } from "effect"
import type { ActorRuntime } from "../ActorRuntime.ts"
import type * as DistributedState from "../DistributedState.ts"
import type { MalformedMessage, MessageTooLarge } from "../DStateError.ts"
import * as Generation from "../Generation.ts"
import type { NodeId } from "../NodeId.ts"
import { RequestSnapshot } from "../SyncMessage.ts"
import { encodeFrame, type StateCodec } from "./codec.ts"
import type { CounterKey, Owner } from "./sync/types.ts"
import type { Tracing } from "./tracing.ts"

export interface Env<S, V, D, C> {
  readonly definition: DistributedState.DistributedState<S, V, D, C>
  readonly codec: StateCodec<S, V, D>
  readonly tracing: Tracing
  readonly runtime: ActorRuntime["Service"]
  readonly group: string
  readonly maxFrameBytes: number
  readonly count: (key: CounterKey, by?: number) => void
  readonly annotate: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** The owner's current state. */
  readonly owner: () => Owner<S, V>
}

export const make = <S, V, D, C>(env: Env<S, V, D, C>) => {
  const { annotate, codec, count, definition, group, tracing } = env
  const name = definition.name
  const self = env.runtime.nodeId
  const snapshotSupersede = { key: name, replaces: true } as const
  const deltaSupersede = { key: name, replaces: false } as const

  let snapshotCache: { readonly generation: Generation.Generation; readonly frame: Uint8Array } | undefined
  /** The current snapshot frame, encoded once per generation. */
  const snapshotFrameNow = (): Result.Result<Uint8Array, MalformedMessage | MessageTooLarge> => {
    const o = env.owner()
    if (snapshotCache !== undefined && Generation.equals(snapshotCache.generation, o.generation)) {
      return Result.succeed(snapshotCache.frame)
    }
    const payload = codec.encodeViewShared(o.view) // copied into the frame at once
    if (Result.isFailure(payload)) return payload
    // A plain envelope: every field comes from this shard, so the message class's checks are skipped.
    const frame = encodeFrame({
      _tag: "FullSnapshot",
      stateName: name,
      source: self,
      generation: o.generation,
      wireVersion: definition.wireVersion,
      createdAt: o.createdAt,
      modifiedAt: o.modifiedAt,
      payload: payload.success
    }, env.maxFrameBytes)
    if (Result.isSuccess(frame)) snapshotCache = { generation: o.generation, frame: frame.success }
    return frame
  }
  const snapshotFrame = Effect.suspend((): Effect.Effect<Uint8Array | undefined> => {
    const frame = snapshotFrameNow()
    return Result.isSuccess(frame) ? Effect.succeed(frame.success) : logSendFailure(frame.failure)
  })
  const logSendFailure = (error: { readonly message: string }) =>
    Effect.logError("cannot send the view").pipe(
      Effect.annotateLogs({ error: error.message, generation: Generation.format(env.owner().generation) }),
      annotate,
      Effect.as(undefined)
    )

  const peersIn = (members: ReadonlyArray<NodeId>) => {
    let peers = 0
    for (const member of members) if (member !== self) peers++
    return peers
  }

  const broadcastSnapshot: Effect.Effect<void> = Effect.flatMap(env.runtime.members(group), (members) => {
    const peers = peersIn(members)
    if (peers === 0) return Effect.void // nobody to tell: skip the encoding
    const frame = snapshotFrameNow()
    if (Result.isFailure(frame)) return logSendFailure(frame.failure)
    count("snapshotsSent", peers)
    return tracing.send(env.owner().generation, "snapshot", frame.success.length, peers, (trace) =>
      env.runtime.broadcast(group, frame.success, snapshotSupersede, trace))
  })

  const sendSnapshot = (to: NodeId) =>
    Effect.flatMap(snapshotFrame, (frame) => {
      if (frame === undefined) return Effect.void
      count("snapshotsSent")
      return Effect.ignore(env.runtime.send(to, frame, snapshotSupersede))
    })

  const requestFrame = (held: Generation.Generation | undefined) =>
    Result.getOrThrow(encodeFrame(
      new RequestSnapshot({
        stateName: name,
        source: self,
        wireVersion: definition.wireVersion,
        ...(held === undefined ? {} : { generation: held })
      }),
      env.maxFrameBytes
    ))

  const broadcastDelta = (generation: Generation.Generation, modifiedAt: number, delta: D): Effect.Effect<void> =>
    Effect.flatMap(env.runtime.members(group), (members) => {
      const peers = peersIn(members)
      if (peers === 0) return Effect.void
      const payload = codec.encodeDeltaShared(delta) // copied into the frame at once
      if (Result.isFailure(payload)) return logSendFailure(payload.failure)
      const frame = encodeFrame(
        { _tag: "DeltaUpdate", stateName: name, source: self, generation, wireVersion: definition.wireVersion, modifiedAt, payload: payload.success },
        env.maxFrameBytes
      )
      // Too large as a delta: peers will see a gap and ask for the snapshot.
      if (Result.isFailure(frame)) return logSendFailure(frame.failure)
      count("deltasSent", peers)
      return tracing.send(generation, "delta", frame.success.length, peers, (trace) =>
        env.runtime.broadcast(group, frame.success, deltaSupersede, trace))
    })

  return { broadcastDelta, broadcastSnapshot, requestFrame, sendSnapshot, snapshotFrame }
}
