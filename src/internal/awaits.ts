/**
 * The shell of write acknowledgements for one state: the callers waiting
 * until enough peers hold their mutation, the timers of each wait, the
 * acknowledgement frames sent on the core's commands, and which peers may be
 * asked (both sides speak the sync protocol that has acknowledgements). The
 * rules themselves (who counts, when a wait is met, timed out or cannot be
 * met, when a peer acknowledges) are the sync core's (`sync/acks.ts`).
 * @internal
 */
import { Deferred, Effect, Fiber, Result, Scope } from "effect"
import type { ActorRef, ActorRuntime } from "../ActorRuntime.ts"
import { AckTimeout, AckUnsatisfiable, ActorStopped } from "../DStateError.ts"
import type * as Generation from "../Generation.ts"
import type { NodeId } from "../NodeId.ts"
import { ackProtocolVersion } from "../SyncMessage.ts"
import { encodeFrame } from "./codec.ts"
import type * as Sync from "./sync/core.ts"

/** A committed mutation: its generation and the owner state it made. */
export interface Committed<S> {
  readonly generation: Generation.Generation
  readonly state: S
}

/** A committed mutation and the peers that acknowledged it. */
export interface Acknowledged<S> extends Committed<S> {
  readonly acknowledged: number
  readonly acknowledgedBy: ReadonlyArray<NodeId>
  readonly required: number
}

/** What an awaited mutation waits for (checked by the registry). */
export interface AwaitSpec {
  readonly peers: Sync.AwaitPeers
  readonly timeoutMillis: number
}

/** The actor messages of acknowledgements. */
export type Message =
  | {
    readonly _tag: "Await"
    readonly id: number
    readonly generation: Generation.Generation
    readonly spec: AwaitSpec
  }
  | { readonly _tag: "AwaitDue"; readonly id: number }
  | { readonly _tag: "AwaitRetryDue"; readonly id: number }
  | { readonly _tag: "AckDue" }

type AwaitCommand = Extract<
  Sync.Command<unknown>,
  { readonly _tag: "SendAckRequest" | "ScheduleAck" | "SendAck" | "StartAwaitTimer" | "StartAwaitRetry" | "ResolveAwait" }
>
type AwaitResolution = Extract<Sync.Command<unknown>, { readonly _tag: "ResolveAwait" }>
/** The core's inputs that acknowledgements feed. */
type AwaitInput = Extract<Sync.Input<unknown, unknown, unknown>, { readonly _tag: "Await" | "AckDue" }>

export interface Env {
  readonly stateName: string
  readonly group: string
  readonly runtime: ActorRuntime["Service"]
  readonly maxFrameBytes: number
  /** The shard's scope: timers run in it. */
  readonly scope: Scope.Scope
  /** The state's actor (an await registers in the caller's fiber when it is idle). */
  readonly actor: ActorRef<Message>
  /** Messages waiting in the actor's data mailbox. */
  readonly waitingMessages: () => number
  /** Hands a control message to the actor. */
  readonly tell: (message: Message) => Effect.Effect<void>
  /** Feeds an input to the core and carries out its commands. */
  readonly step: (input: AwaitInput) => Effect.Effect<void>
}

export interface Awaits<S> {
  /** Carries out one of the core's acknowledgement commands (`undefined`: done at once). */
  readonly execute: (command: AwaitCommand) => Effect.Effect<void> | undefined
  /** Hands an await to the core (in the actor). */
  readonly register: (id: number, generation: Generation.Generation, spec: AwaitSpec) => Effect.Effect<void>
  /** Waits until the core resolves an await of `committed`, and turns its outcome into the caller's result. */
  readonly await: (
    committed: Committed<S>,
    spec: AwaitSpec
  ) => Effect.Effect<Acknowledged<S>, AckTimeout | AckUnsatisfiable | ActorStopped>
}

/** Starts the acknowledgements of a state in the current scope: a caller still waiting when it closes is told. */
export const make = Effect.fnUntraced(function*<S>(env: Env): Effect.fn.Return<Awaits<S>, never, Scope.Scope> {
  const { group, runtime, stateName } = env
  const self = runtime.nodeId
  /** The callers waiting for acknowledgements, by await id, with the timer of each once started. */
  const waiting = new Map<number, {
    readonly done: Deferred.Deferred<AwaitResolution, ActorStopped>
    timer: Fiber.Fiber<void> | undefined
    retry: Fiber.Fiber<void> | undefined
  }>()
  // The state stops (its node leaves or crashes): a caller still waiting for acknowledgements learns it.
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      const stopped = new ActorStopped({ actor: `state/${stateName}` })
      for (const entry of waiting.values()) Deferred.doneUnsafe(entry.done, Effect.fail(stopped))
      waiting.clear()
    })
  )
  let nextAwaitId = 0
  const ackDue: Message = { _tag: "AckDue" }
  const ackNow = Effect.suspend(() => env.step({ _tag: "AckDue" }))

  const sendAckFrame = (tag: "AckRequest" | "Acknowledge", to: NodeId, generation: Generation.Generation) => {
    const frame = encodeFrame({ _tag: tag, stateName, source: self, generation }, env.maxFrameBytes)
    return Result.isSuccess(frame) ? Effect.ignore(runtime.send(to, frame.success)) : undefined
  }
  const startTimer = (id: number, millis: number, message: Message, slot: "timer" | "retry") =>
    Effect.flatMap(
      Scope.provide(runtime.after(millis, env.tell(message)), env.scope),
      (fiber) =>
        Effect.sync(() => {
          const entry = waiting.get(id)
          if (entry !== undefined) entry[slot] = fiber
        })
    )
  const resolve = (command: AwaitResolution): Effect.Effect<void> | undefined => {
    const entry = waiting.get(command.id)
    if (entry === undefined) return undefined
    waiting.delete(command.id)
    Deferred.doneUnsafe(entry.done, Effect.succeed(command))
    const timers = [entry.timer, entry.retry].filter((fiber) => fiber !== undefined)
    return timers.length === 0 ? undefined : Fiber.interruptAll(timers)
  }
  /**
   * Whether acknowledgement messages may be exchanged with `node`: both sides speak their protocol (as the
   * runtime negotiated it when the peer connected or joined; every peer does when the runtime does not say).
   */
  const ownProtocol = runtime.syncProtocol ?? ackProtocolVersion
  const speaksAcks = (node: NodeId): boolean => {
    if (ownProtocol < ackProtocolVersion) return false
    const protocol = runtime.peerProtocol
    return protocol === undefined || protocol(node) >= ackProtocolVersion
  }
  const register = Effect.fnUntraced(function*(id: number, generation: Generation.Generation, spec: AwaitSpec) {
    const members = yield* runtime.members(group)
    const eligible: Array<NodeId> = []
    const unsupported: Array<NodeId> = []
    for (const member of members) {
      if (member === self) continue
      if (speaksAcks(member)) eligible.push(member)
      else unsupported.push(member)
    }
    yield* env.step({
      _tag: "Await",
      id,
      generation,
      peers: spec.peers,
      eligible,
      unsupported,
      timeoutMillis: spec.timeoutMillis
    })
  })

  const execute = (command: AwaitCommand): Effect.Effect<void> | undefined => {
    switch (command._tag) {
      case "SendAckRequest":
        return sendAckFrame("AckRequest", command.to, command.generation)
      case "ScheduleAck":
        // At once when no message waits; else behind the waiting ones, so that one acknowledgement per
        // owner covers everything they bring.
        return env.waitingMessages() === 0 ? ackNow : env.tell(ackDue)
      case "SendAck":
        return sendAckFrame("Acknowledge", command.to, command.generation)
      case "StartAwaitTimer":
        return startTimer(command.id, command.millis, { _tag: "AwaitDue", id: command.id }, "timer")
      case "StartAwaitRetry":
        return startTimer(command.id, command.millis, { _tag: "AwaitRetryDue", id: command.id }, "retry")
      case "ResolveAwait":
        return resolve(command)
    }
  }

  const awaitAcks = (
    committed: Committed<S>,
    spec: AwaitSpec
  ): Effect.Effect<Acknowledged<S>, AckTimeout | AckUnsatisfiable | ActorStopped> => {
    const id = nextAwaitId++
    const done = Deferred.makeUnsafe<AwaitResolution, ActorStopped>()
    waiting.set(id, { done, timer: undefined, retry: undefined })
    // Handled at once in this fiber when the actor is idle (no mailbox round), else through the mailbox.
    const runIfIdle = env.actor.runIfIdleUnsafe
    const registered = runIfIdle?.(() => register(id, committed.generation, spec)) ??
      env.actor.tell({ _tag: "Await", id, generation: committed.generation, spec }).pipe(
        // The control mailbox is unbounded: only a stopped actor refuses.
        Effect.catch(() => Effect.fail(new ActorStopped({ actor: `state/${stateName}` })))
      )
    return Effect.andThen(registered, Deferred.await(done)).pipe(
      Effect.onInterrupt(() => Effect.sync(() => waiting.delete(id))),
      Effect.flatMap((r): Effect.Effect<Acknowledged<S>, AckTimeout | AckUnsatisfiable | ActorStopped> => {
        switch (r.outcome) {
          case "Acknowledged":
            return Effect.succeed({
              generation: committed.generation,
              state: committed.state,
              acknowledged: r.acknowledged.length,
              acknowledgedBy: r.acknowledged,
              required: r.required
            })
          case "TimedOut":
            return Effect.fail(
              new AckTimeout({
                stateName,
                generation: committed.generation,
                acknowledged: r.acknowledged.length,
                required: r.required,
                missing: r.missing,
                timeoutMillis: spec.timeoutMillis
              })
            )
          case "Unsatisfiable":
            return Effect.fail(
              new AckUnsatisfiable({
                stateName,
                generation: committed.generation,
                acknowledged: r.acknowledged.length,
                required: r.required,
                eligible: r.eligible,
                unsupported: r.unsupported
              })
            )
        }
      })
    )
  }

  return { execute, register, await: awaitAcks }
})
