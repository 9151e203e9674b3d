/**
 * The StateShard: one actor per registered state on a node, the effectful
 * shell around the sync core (`sync/core.ts`). It loads and persists the
 * owner's state, runs mutations (persist, then commit), feeds every inbound
 * message, timer and membership event to the core on the actor, and carries
 * out the commands the core returns: it encodes and sends frames, publishes
 * the view map, starts timers and logs. Queries are served from the
 * published map; stale views are pulled (`pulls.ts`).
 * @internal
 */
import { Clock, Deferred, Duration, Effect, Exit, Fiber, PubSub, Result, Scope, Stream, SubscriptionRef } from "effect"
import type { ActorRef, TraceContext } from "../ActorRuntime.ts"
import type { StateReadiness } from "../Diagnostics.ts"
import type * as DistributedState from "../DistributedState.ts"
import { ActorStopped, type InvalidOptions, MailboxFull, MalformedMessage, PersistenceFailed } from "../DStateError.ts"
import * as Generation from "../Generation.ts"
import * as Metrics from "../Metrics.ts"
import type { NodeId } from "../NodeId.ts"
import type { ViewMap } from "../StateView.ts"
import type { RequestSnapshot } from "../SyncMessage.ts"
import { isSucceeded } from "./actor.ts"
import * as Awaits from "./awaits.ts"
import type {
  Acknowledged,
  Apply,
  AwaitSpec,
  Committed,
  Inbound,
  Message,
  QueryOptions,
  Shard,
  ShardEnv,
  ShardOptions
} from "./shardApi.ts"
import * as ChangeStreams from "./changeStreams.ts"
import { makeStateCodec } from "./codec.ts"
import * as MetricSeries from "./metricSeries.ts"
import * as OwnerStore from "./ownerStore.ts"
import * as DataMailbox from "./dataMailbox.ts"
import * as GroupCommit from "./groupCommit.ts"
import * as Pulls from "./pulls.ts"
import * as StateFrames from "./stateFrames.ts"
import * as Sync from "./sync/core.ts"
import * as Tracing from "./tracing.ts"

export type { Acknowledged, AwaitSpec, Committed, QueryOptions, Shard, ShardEnv, ShardOptions }

/**
 * Starts a shard in the current scope: loads or creates the owner state, spawns the actor, announces itself.
 * Fails only when the runtime refuses to spawn its actor.
 */
export const make = Effect.fnUntraced(function*<S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>,
  options: ShardOptions,
  env: ShardEnv
): Effect.fn.Return<Shard<S, V, C>, InvalidOptions, Scope.Scope> {
  const name = definition.name
  const self = env.runtime.nodeId
  const shardScope = yield* Scope.Scope
  // The shard's own clock: freshness is judged on the clock that stamped `syncedAt`.
  const clock = yield* Clock.Clock
  const monotonicNow = () => Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000
  const group = `dstate/state/${name}`
  const codec = makeStateCodec(definition)
  const persistence = options.persist ? env.persistence : undefined
  const metricContext = MetricSeries.labelled(yield* Effect.context<never>(), { state: name, node: self })
  const counters = MetricSeries.counters(Metrics.state, metricContext)
  yield* Effect.addFinalizer(() => Effect.sync(counters.remove))
  const count = counters.inc
  const saveLatency = MetricSeries.histogram(Metrics.saveLatency, Metrics.latencyBoundaries, metricContext)
  const mutateToPublish = MetricSeries.histogram(Metrics.mutateToPublish, Metrics.latencyBoundaries, metricContext)
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      saveLatency.remove()
      mutateToPublish.remove()
    })
  )
  const annotate = Effect.annotateLogs({ state: name, node: self })
  const pullTimeoutMillis = Duration.toMillis(options.pullTimeout)

  // ---- startup: load, migrate or start fresh -------------------------------------------------
  const save = OwnerStore.saver(definition, codec, persistence)
  const initialOwner = yield* OwnerStore.start(definition, codec, persistence, save).pipe(annotate)

  // ---- the core --------------------------------------------------------------------------------
  const observer = env.observer
  const onDeparted = observer?.onDeparted
  const core = Sync.make<S, V, D, C>({
    self,
    stateName: name,
    wireVersion: definition.wireVersion,
    delta: definition._tag === "Delta",
    pushMode: options.strategy.pushMode,
    periodic: options.strategy.periodicFullSync !== undefined,
    pullTimeoutMillis,
    versionMismatchPolicy: options.versionMismatchPolicy,
    departedCapacity: env.departedCapacity,
    coalescePush: true
  }, {
    decodeView: codec.decodeView,
    decodeDelta: codec.decodeDelta,
    applyDelta: definition._tag === "Delta"
      ? (view, delta) => Result.try({ try: () => definition.applyDelta(view, delta as never), catch: (cause) => cause })
      : undefined,
    projectDelta: definition._tag === "Delta"
      ? (change) => Result.try({ try: () => definition.projectDelta(change) as D, catch: (cause) => cause })
      : undefined,
    syncUrgency: definition._tag === "Delta" && definition.syncUrgency !== undefined
      ? (oldView, newView, delta) => {
        const urgency = Result.try({ try: () => definition.syncUrgency!(oldView, newView, delta as never), catch: (cause) => cause })
        if (Result.isFailure(urgency) || urgency.success._tag !== "Delayed") return urgency as Result.Result<Sync.Urgency, unknown>
        return Result.succeed({ _tag: "Delayed", millis: Duration.toMillis(urgency.success.duration) })
      }
      : undefined,
    malformed: (from, reason) => new MalformedMessage({ node: from, stateName: name, reason }),
    count,
    onDeparted: onDeparted === undefined ? undefined : (sizes) => onDeparted(name, self, sizes)
  }, initialOwner, monotonicNow(), observer !== undefined)
  const views = yield* SubscriptionRef.make<ViewMap<V>>(core.views.current)

  // ---- carrying out the core's commands ---------------------------------------------------------
  const tracing = Tracing.make(name, self)
  const frames = StateFrames.make({
    definition,
    codec,
    tracing,
    runtime: env.runtime,
    group,
    maxFrameBytes: env.maxFrameBytes,
    count,
    annotate,
    owner: () => core.owner
  })
  const { broadcastDelta, broadcastSnapshot, requestFrame, sendSnapshot, snapshotFrame } = frames

  /** Publishes the core's view map (actor only): set and notify subscribers in place, without the ref's semaphore. */
  const publish = (): void => {
    const next = core.views.published()
    observer?.onViews(name, self, next)
    views.value = next
    PubSub.publishUnsafe(views.pubsub, next)
  }

  let delayed: Fiber.Fiber<void> | undefined
  const cancelDelayed = Effect.suspend(() => {
    const fiber = delayed
    delayed = undefined
    return fiber === undefined ? Effect.void : Fiber.interrupt(fiber)
  })
  const startDelayed = (millis: number) =>
    Effect.andThen(cancelDelayed, Effect.flatMap(Scope.provide(env.runtime.after(millis, tellControl(delayDue)), shardScope), (fiber) =>
      Effect.sync(() => {
        delayed = fiber
      })))
  // Peers whose views are awaited, by the millisecond the wait ends: one timer per distinct deadline, not one
  // per peer (a node joining a large cluster awaits every member's view at once).
  const awaitedViews = new Map<number, Array<NodeId>>()
  const awaitView = (node: NodeId) =>
    Effect.suspend(() => {
      const due = Math.floor(monotonicNow()) + pullTimeoutMillis
      const waiting = awaitedViews.get(due)
      if (waiting !== undefined) {
        waiting.push(node)
        return Effect.void
      }
      const nodes = [node]
      awaitedViews.set(due, nodes)
      const fire = Effect.suspend(() => {
        awaitedViews.delete(due)
        return Effect.forEach(nodes, (n) => tellControl({ _tag: "AwaitView", node: n }), { discard: true })
      })
      return env.runtime.after(pullTimeoutMillis, fire).pipe(Scope.provide(shardScope), Effect.asVoid)
    })

  /** Moves to a newer incarnation than `seen` (a peer holds it: our clock stepped back or an older state was restored). */
  const reincarnate = Effect.fnUntraced(function*(seen: Generation.Generation, requester: NodeId) {
    const now = yield* Clock.currentTimeMillis
    const owner = core.owner
    const incarnation = Generation.nextIncarnation(now, Math.max(seen.incarnation, owner.generation.incarnation))
    const next: Sync.Owner<S, V> = { ...owner, generation: Generation.initial(incarnation), modifiedAt: now }
    yield* Effect.logWarning("a peer holds a newer generation of this node's state; moving to a new incarnation").pipe(
      Effect.annotateLogs({ seen: Generation.format(seen), held: Generation.format(owner.generation), incarnation }),
      annotate
    )
    const saved = yield* Effect.result(save(next))
    yield* run(Sync.step(core, { _tag: "Reincarnated", owner: Result.isSuccess(saved) ? next : undefined, requester }, monotonicNow()))
  })

  const log = (command: Extract<Sync.Command<D>, { readonly _tag: "Log" }>) => {
    const logged = command.level === "Debug"
      ? Effect.logDebug(command.message)
      : command.level === "Warning"
      ? Effect.logWarning(command.message)
      : Effect.logError(command.message)
    return logged.pipe(Effect.annotateLogs(command.annotations), annotate)
  }

  /** Carries out one command: at once when it is synchronous (`undefined` then), else as an effect. */
  const execute = (command: Sync.Command<D>): Effect.Effect<void> | undefined => {
    switch (command._tag) {
      case "Publish":
        publish()
        return undefined
      case "SchedulePush":
        // Handed over once the committing fiber yields (a burst in one turn becomes one snapshot).
        if (actor.tellLaterUnsafe === undefined || !actor.tellLaterUnsafe(pushDue)) core.pushScheduled = false
        return undefined
      case "Notify":
        env.notify({ stateName: name, source: self, generation: command.generation })
        return undefined
      case "SendSnapshot":
        return command.to === undefined ? broadcastSnapshot : sendSnapshot(command.to)
      case "BroadcastDelta":
        return broadcastDelta(command.generation, command.modifiedAt, command.delta)
      case "SendRequest": {
        const frame = requestFrame(command.held)
        return command.to === undefined
          ? env.runtime.broadcast(group, frame)
          : Effect.ignore(env.runtime.send(command.to, frame))
      }
      case "StartDelay":
        return startDelayed(command.millis)
      case "CancelDelay":
        return cancelDelayed
      case "AwaitView":
        return awaitView(command.node)
      case "Reincarnate":
        return reincarnate(command.seen, command.requester)
      case "Log":
        return log(command)
      case "SendAckRequest":
      case "ScheduleAck":
      case "SendAck":
      case "StartAwaitTimer":
      case "StartAwaitRetry":
      case "ResolveAwait":
        return awaits.execute(command)
    }
  }

  /** Carries out a step's commands in order; an exit when all of them were synchronous. */
  const run = (commands: ReadonlyArray<Sync.Command<D>>): Effect.Effect<void> => {
    let effect: Effect.Effect<void> | undefined
    for (let i = 0; i < commands.length; i++) {
      const next = execute(commands[i])
      if (next !== undefined) effect = effect === undefined ? next : Effect.andThen(effect, next)
    }
    return effect ?? Effect.void
  }

  // ---- mutations ------------------------------------------------------------------------------
  const prepareMutation = (apply: Apply<S, C>, before: Sync.Owner<S, V>) =>
    OwnerStore.prepare(definition, apply, before, clock.currentTimeMillisUnsafe())

  /** Makes a persisted (or unpersisted) mutation visible, acknowledges it, and sends what the core says. */
  const commit = (
    next: Sync.Owner<S, V>,
    change: C | undefined,
    done: Deferred.Deferred<Committed<S>, PersistenceFailed> | undefined,
    startedAt: number | undefined
  ): Effect.Effect<void> => {
    const now = monotonicNow()
    tracing.committed(next.generation)
    const sent = run(Sync.step(core, { _tag: "Committed", owner: next, change }, now))
    mutateToPublish.observe(startedAt === undefined ? 0 : now - startedAt)
    if (done !== undefined) Deferred.doneUnsafe(done, Effect.succeed({ generation: next.generation, state: next.state }))
    return sent
  }

  /** The error of the last save, while the last save failed (readiness reports it). */
  let lastSaveFailure: string | undefined

  /** A mutation without persistence that went through the mailbox (the actor was busy or paused). */
  const onMutate = (
    apply: Apply<S, C>,
    done: Deferred.Deferred<Committed<S>, PersistenceFailed>,
    startedAt: number
  ): Effect.Effect<void> => {
    const prepared = prepareMutation(apply, core.owner)
    if (Result.isFailure(prepared)) return Deferred.die(done, prepared.failure)
    return commit(prepared.success.next, prepared.success.change, done, startedAt)
  }

  // The bound applies to data (mutations and inbound sync messages; `register` checked it). Control messages
  // (membership, timers, feed markers, flushes) are never dropped: losing a leave would leave a ghost view behind.
  const capacity = options.mailbox === "unbounded" ? Number.POSITIVE_INFINITY : options.mailbox
  /** Persisted mutations: staged, saved in batches by `Flush`, committed once durable (see `groupCommit.ts`). */
  const flushMessage: Message<S, C> = { _tag: "Flush" }
  const groupCommit = persistence === undefined ? undefined : GroupCommit.make<S, V, C>({
    capacity,
    full: new MailboxFull({ actor: `state/${name}`, capacity }),
    prepare: prepareMutation,
    durable: () => core.owner,
    save: (owner, change, spans) => {
      const started = monotonicNow()
      return tracing.persist(spans, owner.generation, save(owner, change)).pipe(
        Effect.onExit(() => Effect.sync(() => saveLatency.observe(monotonicNow() - started))),
        Effect.tap(() =>
          Effect.sync(() => {
            lastSaveFailure = undefined
          })
        )
      )
    },
    commit: (next, change, done, startedAt, span) => tracing.publish(span, () => commit(next, change, done, startedAt)),
    failed: (error, mutations) => {
      count("persistenceFailures", mutations)
      lastSaveFailure = error.message
      return Effect.logWarning("mutations not committed: persistence failed").pipe(
        Effect.annotateLogs({ error: error.message, age: core.owner.generation.age, mutations }),
        annotate
      )
    },
    tellFlush: Effect.suspend(() => Effect.ignore((actor.tellOrRun ?? actor.tell)(flushMessage)))
  })

  /**
   * A mutation without persistence on an idle actor: handled at once in the caller's fiber, without a
   * message or a reply (`undefined` when the actor is busy or paused: the caller goes through the mailbox).
   */
  const mutateNow = (apply: Apply<S, C>): Effect.Effect<Committed<S>> | undefined => {
    const runIfIdle = actor.runIfIdleUnsafe
    if (persistence !== undefined || runIfIdle === undefined) return undefined
    let outcome: Result.Result<Committed<S>, unknown> | undefined
    const rest = runIfIdle(() => {
      const prepared = prepareMutation(apply, core.owner)
      if (Result.isFailure(prepared)) {
        outcome = Result.fail(prepared.failure)
        return Effect.void
      }
      const { change, next } = prepared.success
      outcome = Result.succeed({ generation: next.generation, state: next.state })
      const sent = commit(next, change, undefined, undefined)
      return mailbox.resyncPending() ? Effect.andThen(sent, resync) : sent
    })
    if (rest === undefined || outcome === undefined) return undefined
    if (Result.isFailure(outcome)) return Effect.die(outcome.failure)
    return isSucceeded(rest) ? Effect.succeed(outcome.success) : Effect.as(rest, outcome.success)
  }

  // ---- the actor ------------------------------------------------------------------------------
  const pushDue: Message<S, C> = { _tag: "PushDue" }
  const delayDue: Message<S, C> = { _tag: "DelayDue" }
  const isMember = (node: NodeId) => Effect.map(env.runtime.members(group), (members) => members.includes(node))

  const receive = (message: Message<S, C>): Effect.Effect<void> => {
    switch (message._tag) {
      case "Mutate":
        return tracing.publish(message.span, () => onMutate(message.apply, message.done, message.startedAt))
      case "Flush":
        return groupCommit === undefined ? Effect.void : groupCommit.flush
      case "Inbound": {
        const { from, message: m } = message
        const input: Sync.Input<S, V, C> = m._tag === "RequestSnapshot"
          ? { _tag: "Request", from, message: m }
          : m._tag === "FullSnapshot"
          ? { _tag: "Snapshot", from, message: m }
          : m._tag === "DeltaUpdate"
          ? { _tag: "Delta", from, message: m }
          : m._tag === "AckRequest"
          ? { _tag: "AckRequest", from, message: m }
          : { _tag: "Ack", from, message: m }
        const handled = m._tag !== "FullSnapshot" && m._tag !== "DeltaUpdate"
          ? run(Sync.step(core, input, monotonicNow()))
          : tracing.apply(message.trace, m, () => run(Sync.step(core, input, monotonicNow())), () => {
            const held = core.views.get(m.source)
            return held !== undefined && Generation.equals(held.generation, m.generation)
          })
        return message.done === undefined ? handled : Effect.ensuring(handled, Deferred.succeed(message.done, undefined))
      }
      case "PeerJoined":
      case "AwaitView": {
        const { node } = message
        return Effect.flatMap(isMember(node), (member) =>
          run(Sync.step(core, { _tag: message._tag === "PeerJoined" ? "PeerJoined" : "AwaitViewDue", node, member }, monotonicNow())))
      }
      case "PeerLeft":
        return run(Sync.step(core, { _tag: "PeerLeft", node: message.node }, monotonicNow()))
      case "PeerUnreachable":
      case "PeerReachable":
        return run(Sync.step(core, message, monotonicNow()))
      case "Notice":
        return run(Sync.step(core, { _tag: "Notice", source: message.source, generation: message.generation }, monotonicNow()))
      case "DelayDue":
        delayed = undefined
        return run(Sync.step(core, { _tag: "DelayDue" }, monotonicNow()))
      case "Probe":
        return Deferred.succeed(message.done, undefined)
      case "PushDue":
      case "PeriodicDue":
      case "AckDue":
        return run(Sync.step(core, message, monotonicNow()))
      case "AwaitDue":
      case "AwaitRetryDue":
        return run(Sync.step(core, message, monotonicNow()))
      case "Await":
        return awaits.register(message.id, message.generation, message.spec)
    }
  }

  const mailbox = DataMailbox.make(capacity, new MailboxFull({ actor: `state/${name}`, capacity }))
  const depth = MetricSeries.gauge(Metrics.mailboxDepth, metricContext, () => mailbox.size() + (groupCommit?.size() ?? 0))
  yield* Effect.addFinalizer(() => Effect.sync(depth.remove))
  const resync = Effect.suspend(() => {
    const peers = mailbox.takeResync()
    return peers === undefined ? Effect.void : run(Sync.step(core, { _tag: "Resync", ...peers }, monotonicNow()))
  })
  const isData = (m: Message<S, C>) => m._tag === "Mutate" || m._tag === "Inbound"

  const actor: ActorRef<Message<S, C>> = yield* env.runtime.spawn<Message<S, C>, never>({
    name: `state/${name}`,
    mailbox: "unbounded",
    receive: (m) => {
      if (!isData(m)) return receive(m)
      // Taken out of the mailbox: the bound counts waiting messages, as a queue's would.
      mailbox.taken()
      const handled = receive(m)
      if (!Exit.isExit(handled as Effect.Effect<void>)) return Effect.andThen(handled, resync)
      return mailbox.resyncPending() ? Effect.andThen(handled, resync) : handled
    },
    onDefect: (m, defect) =>
      m._tag === "Mutate"
        ? Deferred.die(m.done, defect).pipe(Effect.asVoid)
        : m._tag === "Flush" && groupCommit !== undefined
        ? groupCommit.aborted(defect)
        : m._tag === "Inbound" && m.done !== undefined
        ? Deferred.succeed(m.done, undefined).pipe(Effect.asVoid)
        : Effect.void
  }).pipe(annotate) // the actor's fiber inherits the annotations: every log of a handler names state and node

  const tellData = mailbox.via(actor.tell)
  /** A mutation: handled at once in the caller's fiber when the actor is idle (see `ActorRef.tellOrRun`). */
  const runData = actor.tellOrRun === undefined ? tellData : mailbox.via(actor.tellOrRun)
  const tellControl = (message: Message<S, C>): Effect.Effect<void> => Effect.ignore(actor.tell(message))

  const awaits = yield* Awaits.make<S>({
    stateName: name,
    group,
    runtime: env.runtime,
    maxFrameBytes: env.maxFrameBytes,
    scope: shardScope,
    actor,
    waitingMessages: () => mailbox.size(),
    tell: tellControl,
    step: (input) => run(Sync.step(core, input, monotonicNow()))
  })

  /** Delivers an inbound sync message, or drops it (counted) and remembers to resync with its sender. */
  const deliverInbound = (from: NodeId, message: Inbound, trace?: TraceContext) =>
    tellData({ _tag: "Inbound", from, message, trace }).pipe(
      Effect.catch(() =>
        Effect.sync(() => {
          count("mailboxDropped")
          mailbox.dropped(from, message._tag === "RequestSnapshot")
        })
      )
    )

  const mutate = (apply: Apply<S, C>): Effect.Effect<Committed<S>, PersistenceFailed | MailboxFull | ActorStopped> =>
    tracing.mutate((span) => {
      if (groupCommit !== undefined) return groupCommit.mutate(apply, monotonicNow(), span)
      // A traced mutation goes through the actor, so that its commit runs inside its publish span.
      const now = span === undefined ? mutateNow(apply) : undefined
      if (now !== undefined) return now
      const done = Deferred.makeUnsafe<Committed<S>, PersistenceFailed>()
      const message: Message<S, C> = { _tag: "Mutate", apply, done, startedAt: monotonicNow(), span }
      const handled = Effect.andThen(runData(message), Deferred.await(done))
      // The reply resumes this fiber inside the actor's turn: let the actor finish it first, so that the
      // caller's next mutation finds it idle instead of queueing behind it.
      return Effect.tap(handled, () => Effect.yieldNow)
    })

  // ---- queries and pulls ------------------------------------------------------------------------
  const queries = Pulls.make<V>({
    stateName: name,
    self,
    core,
    pullOnQuery: options.strategy.pullOnQuery,
    pullTimeout: options.pullTimeout,
    monotonicNow,
    count,
    syncFailed: (node, message) => Sync.syncFailed(core, node, message),
    request: (node) => env.runtime.request(node, requestFrame(Sync.heldOf(core, node)), options.pullTimeout),
    decode: (node, frame) => env.decodeInbound(node, frame),
    apply: (node, message, done) => tellData({ _tag: "Inbound", from: node, message, done })
  })

  // ---- announce ------------------------------------------------------------------------------
  yield* env.runtime.joinGroup(group)
  yield* Effect.addFinalizer(() => env.runtime.leaveGroup(group))
  const members = yield* env.runtime.members(group)
  yield* run(Sync.step(core, { _tag: "Started", others: members.filter((m) => m !== self) }, monotonicNow()))

  const periodic = options.strategy.periodicFullSync
  if (periodic !== undefined) yield* env.runtime.every(periodic, tellControl({ _tag: "PeriodicDue" }))
  if (
    definition._tag === "Delta" && definition.syncUrgency !== undefined && periodic === undefined &&
    !options.strategy.pullOnQuery
  ) {
    yield* Effect.logWarning(
      "this state's syncUrgency may suppress changes and the strategy has neither periodic sync nor pull on query: a suppressed change reaches peers only with the next sent update"
    ).pipe(annotate)
  }

  const changes = Stream.unwrap(Effect.sync(() => {
    core.views.subscribed = true
    core.views.handedOut = true
    return SubscriptionRef.changes(views)
  }))

  return {
    name,
    definition,
    group,
    deliver: deliverInbound,
    reply: Effect.fnUntraced(function*(from: NodeId, message: RequestSnapshot) {
      if (message.generation !== undefined && Generation.isNewer(message.generation, core.owner.generation)) {
        // Let the actor move to a newer incarnation; the pull gets the current snapshot meanwhile.
        yield* deliverInbound(from, message)
      } else {
        count("snapshotRequestsReceived")
      }
      count("snapshotsSent")
      const frame = yield* snapshotFrame
      return frame ?? new Uint8Array(0)
    }),
    peerJoined: (node) => tellControl({ _tag: "PeerJoined", node }),
    peerLeft: (node) => tellControl({ _tag: "PeerLeft", node }),
    peerUnreachable: (node, since) => tellControl({ _tag: "PeerUnreachable", node, since }),
    peerReachable: (node) => tellControl({ _tag: "PeerReachable", node }),
    markStale: (source, generation) => tellControl({ _tag: "Notice", source, generation }),
    mutate,
    mutateAwait: (apply, spec) => Effect.flatMap(mutate(apply), (committed) => awaits.await(committed, spec)),
    query: queries.query,
    snapshot: Effect.sync(() => core.views.handOut()),
    changes,
    changesOf: (owner) => ChangeStreams.changesOf(changes, owner),
    diffs: ChangeStreams.diffs(changes),
    state: Effect.sync(() => core.owner.state),
    local: Effect.sync(() => core.views.get(self)!),
    syncStatus: Effect.sync(() => core.peers.report(core.owner.generation, self)),
    metrics: Effect.sync(() => ({ ...counters.values })),
    health: (staleAfterMillis) => Effect.sync(() => Pulls.health(core, name, monotonicNow(), staleAfterMillis)),
    probe: Effect.suspend(() => {
      const done = Deferred.makeUnsafe<void>()
      return Effect.andThen(actor.tell({ _tag: "Probe", done }), Deferred.await(done))
    }),
    readiness: Effect.sync((): StateReadiness => ({
      stateName: name,
      awaiting: [...core.awaited].sort(),
      lastSaveFailure
    })),
    status: Effect.sync(() => Pulls.status(core, name, monotonicNow(), { ...counters.values }, lastSaveFailure))
  }
})
