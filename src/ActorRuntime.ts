/**
 * The actor runtime contract: what dstate needs from the platform it runs on.
 * A runtime knows this node's id, spawns supervised actors (a fiber consuming
 * a `Queue` mailbox, restarted on defects by a `Schedule`), runs timers, keeps
 * named groups of nodes, and moves frames between nodes: one-way sends,
 * broadcasts to a group, and request/reply with a timeout.
 *
 * Implementations: the in-process runtime of `dstate/testing`, the TCP runtime
 * of `dstate/node`, the Effect cluster adapter of `dstate/cluster`.
 *
 * @since 0.1.0
 */
import { Context, Duration, Effect, Schedule, type Fiber, type Scope, type Stream } from "effect"
import type {
  ActorStopped,
  InvalidOptions,
  MailboxFull,
  NodeUnreachable,
  RequestRejected,
  RequestTimeout
} from "./DStateError.ts"
import type { NodeId } from "./NodeId.ts"
import * as Actor from "./internal/actor.ts"

/**
 * A mailbox capacity: a positive number of messages, or `"unbounded"`.
 *
 * @category models
 * @since 0.1.0
 */
export type MailboxCapacity = number | "unbounded"

/**
 * A handle to a running actor.
 *
 * @category models
 * @since 0.1.0
 */
export interface ActorRef<in M> {
  /** The actor's name, unique on its node. */
  readonly name: string
  /** Enqueues a message; fails with `MailboxFull` when a bounded mailbox is full, `ActorStopped` when the actor has stopped. */
  readonly tell: (message: M) => Effect.Effect<void, MailboxFull | ActorStopped>
  /**
   * Like `tell`, but when the actor is idle (nothing being handled, nothing waiting) the message is
   * handled at once in the caller's fiber, with the actor's context and without interruption; the
   * actor's order (one message at a time, in order) holds either way. A defect there is logged,
   * reported to `onDefect` and counted as a restart, as in the actor's fiber. An actor spawned with a
   * `restart` schedule always enqueues. Optional: without it, callers use `tell`.
   */
  readonly tellOrRun?: ((message: M) => Effect.Effect<void, MailboxFull | ActorStopped>) | undefined
  /**
   * Hands `message` to the actor once the calling fiber yields (as `tellOrRun`, from a fiber of the
   * actor's own); messages told this way keep their order. Until then the runtime counts it as work
   * waiting in the actor. `false` when the actor has stopped. Optional.
   */
  readonly tellLaterUnsafe?: ((message: M) => boolean) | undefined
  /**
   * When the actor is idle and may run (as for `tellOrRun`), calls `body` at once in the caller's fiber
   * as if it were the handler of a message, and returns what is left of it to run (an exit when the
   * work was synchronous), under the same rules as `tellOrRun`. `undefined`, and `body` is not called,
   * when the actor is busy or paused. Optional.
   */
  readonly runIfIdleUnsafe?: ((body: () => Effect.Effect<void>) => Effect.Effect<void> | undefined) | undefined
  /** Messages waiting in the mailbox. */
  readonly mailboxSize: Effect.Effect<number>
  /** How many times the actor was restarted after a defect. */
  readonly restarts: Effect.Effect<number>
}

/**
 * How to spawn an actor.
 *
 * @category models
 * @since 0.1.0
 */
export interface SpawnOptions<M, R> {
  /** Unique on the node; used in logs and errors. */
  readonly name: string
  /** Mailbox capacity: a positive integer or `"unbounded"` (the default). */
  readonly mailbox?: MailboxCapacity | undefined
  /** Handles one message. Messages are handled one at a time, in order. */
  readonly receive: (message: M) => Effect.Effect<void, never, R>
  /** Called with a message whose handling died, before the actor restarts (e.g. to fail a waiting caller). */
  readonly onDefect?: ((message: M, defect: unknown) => Effect.Effect<void>) | undefined
  /** Delays between restarts after defects; when it ends, the actor stops (default: restart at once, forever). */
  readonly restart?: Schedule.Schedule<unknown, unknown> | undefined
}

/**
 * What a node does with inbound frames. Installed once per node by the
 * registry.
 *
 * @category models
 * @since 0.1.0
 */
export interface Inbound {
  /** A one-way frame from `from`, with the sender's trace context when the runtime carries one. */
  readonly onMessage: (from: NodeId, frame: Uint8Array, trace?: TraceContext | undefined) => Effect.Effect<void>
  /** A request frame from `from`; the returned frame is the reply. */
  readonly onRequest: (from: NodeId, frame: Uint8Array) => Effect.Effect<Uint8Array, RequestRejected>
}

/**
 * The receiver of a request could not answer it (for example, the state it
 * names is not registered there). The same class as
 * `DStateError.RequestRejected`.
 *
 * @category errors
 * @since 0.1.0
 */
export { RequestRejected } from "./DStateError.ts"

/**
 * A member that joined a group (see `ActorRuntime.groupJoins`).
 *
 * @category models
 * @since 0.1.0
 */
export interface GroupJoin {
  readonly group: string
  readonly node: NodeId
}

/**
 * How a frame relates to frames queued before it for the same peer, said by
 * the caller so that a transport can drop what a newer frame makes useless
 * without understanding the frames (memberlist's named broadcasts).
 *
 * @category models
 * @since 0.1.0
 */
export interface Supersede {
  /** Frames with the same key belong together (for example one state's updates from this node). */
  readonly key: string
  /**
   * `true`: this frame makes every frame still queued with the same key useless, and they are dropped.
   * `false`: the frames of the key form a sequence whose receiver detects a gap and repairs it (one state's
   * deltas): when a queue is at its cap, such a frame may take the place of the newest queued frame of its
   * key instead of making room at the head.
   */
  readonly replaces: boolean
}

/**
 * The span a frame was sent from, so that the receiver's span can be its
 * child (one mutation is one trace across nodes). Runtimes carry it where
 * both sides' wire allows (the TCP runtime with peers that announce it in
 * their handshake; the in-process runtime always) and drop it otherwise.
 *
 * @category models
 * @since 0.1.0
 */
export interface TraceContext {
  readonly traceId: string
  readonly spanId: string
  readonly sampled: boolean
}

/**
 * The actor runtime service.
 *
 * @category services
 * @since 0.1.0
 */
export class ActorRuntime extends Context.Service<ActorRuntime, {
  /** This node's id. */
  readonly nodeId: NodeId
  /**
   * The highest sync frame protocol this node speaks (`SyncMessage.protocolVersion` or
   * `SyncMessage.ackProtocolVersion`); the registry rejects frames of a higher one. Optional: absent,
   * the current one.
   */
  readonly syncProtocol?: number | undefined
  /**
   * Spawns a supervised actor that lives as long as the given scope. Fails with `InvalidOptions` when
   * `mailbox` is neither a positive integer nor `"unbounded"`.
   */
  spawn<M, R>(options: SpawnOptions<M, R>): Effect.Effect<ActorRef<M>, InvalidOptions, Scope.Scope | R>
  /** Runs `effect` at each recurrence of `schedule` (first run after the first delay) until the scope closes or the schedule fails. */
  every<E, R, SE = never>(
    schedule: Schedule.Schedule<unknown, unknown, SE>,
    effect: Effect.Effect<void, E, R>
  ): Effect.Effect<Fiber.Fiber<void, E | SE>, never, Scope.Scope | R>
  /** Runs `effect` once after `delay`, unless the scope closes first. */
  after<E, R>(
    delay: Duration.Input,
    effect: Effect.Effect<void, E, R>
  ): Effect.Effect<Fiber.Fiber<void, E>, never, Scope.Scope | R>
  /** Installs the node's inbound handlers for as long as the scope lives. */
  serve(inbound: Inbound): Effect.Effect<void, never, Scope.Scope>
  /** Adds this node to a named group. */
  joinGroup(group: string): Effect.Effect<void>
  /** Removes this node from a named group. */
  leaveGroup(group: string): Effect.Effect<void>
  /** The nodes currently in a group, this node included when it joined. */
  members(group: string): Effect.Effect<ReadonlyArray<NodeId>>
  /**
   * Members seen joining a group after their `NodeJoined` (a runtime that learns a peer's groups after
   * the peer itself, from its gossip). Optional: the registry treats each as that node joining the
   * group's state.
   */
  readonly groupJoins?: Stream.Stream<GroupJoin> | undefined
  /**
   * The highest frame protocol version `node` speaks (`SyncMessage.protocolVersion` or
   * `SyncMessage.ackProtocolVersion`), as negotiated when it connected or joined. Acknowledgement
   * messages go only to members that speak `ackProtocolVersion`. Optional: without it every member is
   * taken to speak this node's version.
   */
  readonly peerProtocol?: ((node: NodeId) => number) | undefined
  /**
   * Sends a frame to every member of a group except this node. `supersede` says which queued frames it
   * makes useless (a runtime without outbound queues ignores it); `trace`, the span it is sent from (a
   * runtime passes it to the receivers' `onMessage` where their wire allows, and drops it otherwise).
   */
  broadcast(
    group: string,
    frame: Uint8Array,
    supersede?: Supersede | undefined,
    trace?: TraceContext | undefined
  ): Effect.Effect<void>
  /**
   * Sends a frame to one node (`supersede` and `trace` as for `broadcast`). Delivery is not guaranteed.
   */
  send(
    node: NodeId,
    frame: Uint8Array,
    supersede?: Supersede | undefined,
    trace?: TraceContext | undefined
  ): Effect.Effect<void, NodeUnreachable>
  /** Sends a request frame and waits for the reply frame. */
  request(
    node: NodeId,
    frame: Uint8Array,
    timeout: Duration.Input
  ): Effect.Effect<Uint8Array, RequestTimeout | NodeUnreachable | RequestRejected>
}>()("dstate/ActorRuntime") {}

/**
 * Hooks a runtime can give `spawnActor` to observe and gate its actors (the
 * in-process runtime counts work in flight and freezes paused nodes).
 *
 * @category models
 * @since 0.1.0
 */
export interface ActorHooks {
  /** A message was enqueued. */
  readonly onEnqueue?: (() => void) | undefined
  /** A message was handled (or dropped by a stopped actor). */
  readonly onDone?: (() => void) | undefined
  /** Runs before each message; a paused node blocks here. */
  readonly gate?: Effect.Effect<void> | undefined
  /** `false` while `gate` would block: a message handled in the caller's fiber waits in the mailbox instead. */
  readonly isOpen?: (() => boolean) | undefined
}

/**
 * Spawns an actor with the standard mailbox and supervision, for runtimes
 * that need no special scheduling. Fails with `InvalidOptions` (module
 * `"ActorRuntime.spawn"`) for a mailbox capacity that is neither a positive
 * integer nor `"unbounded"`. Runtimes may wrap it (the in-process
 * runtime counts work in flight and freezes paused nodes).
 *
 * @category constructors
 * @since 0.1.0
 */
export const spawnActor: <M, R>(
  options: SpawnOptions<M, R>,
  hooks?: ActorHooks
) => Effect.Effect<ActorRef<M>, InvalidOptions, Scope.Scope | R> = Actor.spawn

/**
 * Runs `effect` on `schedule` in the current scope, as `ActorRuntime.every`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const every = <E, R, SE = never>(
  schedule: Schedule.Schedule<unknown, unknown, SE>,
  effect: Effect.Effect<void, E, R>
): Effect.Effect<Fiber.Fiber<void, E | SE>, never, Scope.Scope | R> =>
  Effect.schedule(effect, schedule).pipe(Effect.asVoid, Effect.forkScoped)

/**
 * Runs `effect` once after `delay` in the current scope, as `ActorRuntime.after`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const after = <E, R>(
  delay: Duration.Input,
  effect: Effect.Effect<void, E, R>
): Effect.Effect<Fiber.Fiber<void, E>, never, Scope.Scope | R> =>
  Effect.delay(effect, delay).pipe(Effect.forkScoped)
