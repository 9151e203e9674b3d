/**
 * The supervised actor: a fiber consuming a `Queue` mailbox.
 * @internal
 */
import { Cause, Effect, Exit, Queue, Result, Schedule, type Scope } from "effect"
import type { ActorRef, SpawnOptions } from "../ActorRuntime.ts"
import { ActorStopped, MailboxFull } from "../DStateError.ts"

/** Hooks a runtime can use to observe and gate actors. */
export interface Hooks {
  /** A message was enqueued. */
  readonly onEnqueue?: (() => void) | undefined
  /** A message was handled (or dropped by a stopped actor). */
  readonly onDone?: (() => void) | undefined
  /** Runs before each message; a paused node blocks here. */
  readonly gate?: Effect.Effect<void> | undefined
}

class ActorDefect {
  readonly _tag = "ActorDefect"
  readonly defect: unknown
  constructor(defect: unknown) {
    this.defect = defect
  }
}

/** Spawns an actor in the current scope. */
export const spawn = <M, R>(
  options: SpawnOptions<M, R>,
  hooks?: Hooks
): Effect.Effect<ActorRef<M>, never, Scope.Scope | R> =>
  Effect.gen(function*() {
    const capacity = options.mailbox === undefined || options.mailbox === "unbounded"
      ? Number.POSITIVE_INFINITY
      : options.mailbox
    if (!(capacity >= 1)) return yield* Effect.die(new Error(`mailbox capacity must be >= 1, got ${capacity}`))
    const mailbox = yield* Queue.make<M>({ capacity, strategy: "dropping" })
    let restarts = 0
    let stoppedFlag = false
    const onEnqueue = hooks?.onEnqueue
    const onDone = hooks?.onDone
    const gate = hooks?.gate

    /** Set while a taken message is being handled, so that a stop releases its accounting too. */
    let handling = false
    const finish = Effect.sync(() => {
      handling = false
      onDone?.()
    })

    const onFailure = (message: M, cause: Cause.Cause<never>) => {
      const defect = Cause.findDefect(cause)
      // Not a defect (an interruption): it ends the actor, as it would without this handler.
      if (Result.isFailure(defect)) return Effect.failCause(cause)
      return Effect.gen(function*() {
        yield* Effect.logError("actor handler died").pipe(
          Effect.annotateLogs({ actor: options.name, defect: String(defect.success) })
        )
        if (options.onDefect) yield* options.onDefect(message, defect.success)
        return yield* Effect.fail(new ActorDefect(defect.success))
      })
    }

    const loop = Effect.gen(function*() {
      while (true) {
        const message = yield* Queue.take(mailbox)
        if (gate) yield* gate
        handling = true
        // One step per message on the common path; defects take the slow path (logged, `onDefect`, restart).
        const exit = yield* Effect.exit(options.receive(message))
        if (Exit.isSuccess(exit)) {
          handling = false
          onDone?.()
        } else {
          yield* onFailure(message, exit.cause).pipe(Effect.ensuring(finish))
        }
      }
    })

    const supervised = loop.pipe(
      Effect.tapError(() => Effect.sync(() => restarts++)),
      Effect.retry(options.restart ?? Schedule.forever),
      Effect.catchCause((cause) => {
        if (Cause.hasInterruptsOnly(cause)) return Effect.void
        // The last defect was not followed by a restart.
        restarts--
        return Effect.logError("actor stopped after repeated defects").pipe(
          Effect.annotateLogs({ actor: options.name, restarts })
        )
      }),
      Effect.ensuring(Effect.sync(() => {
        stoppedFlag = true
        // Whatever is left will never be handled: release the runtime's accounting.
        const left = Queue.sizeUnsafe(mailbox) + (handling ? 1 : 0)
        handling = false
        Queue.shutdownUnsafe(mailbox)
        for (let i = 0; i < left; i++) onDone?.()
      }))
    )
    yield* Effect.forkScoped(supervised)

    const full = new MailboxFull({ actor: options.name, capacity })
    const stopped = new ActorStopped({ actor: options.name })
    return {
      name: options.name,
      tell: (message: M) =>
        Effect.suspend(() => {
          if (Queue.offerUnsafe(mailbox, message)) {
            onEnqueue?.()
            return Effect.void
          }
          return Effect.fail(stoppedFlag ? stopped : full)
        }),
      mailboxSize: Queue.size(mailbox),
      restarts: Effect.sync(() => restarts)
    }
  })
