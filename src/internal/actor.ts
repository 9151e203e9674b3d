/**
 * The supervised actor: a fiber consuming a `Queue` mailbox.
 * @internal
 */
import { Cause, type Context, Deferred, Effect, Exit, Queue, Result, Schedule, type Scope } from "effect"
import type { ActorHooks, ActorRef, SpawnOptions } from "../ActorRuntime.ts"
import { ActorStopped, type InvalidOptions, MailboxFull } from "../DStateError.ts"
import * as Check from "./options.ts"



class ActorDefect {
  readonly _tag = "ActorDefect"
  readonly defect: unknown
  constructor(defect: unknown) {
    this.defect = defect
  }
}

/** `true` when `effect` is an exit that succeeded: nothing is left to run. */
export const isSucceeded = (effect: Effect.Effect<unknown, unknown, unknown>): boolean =>
  Exit.isExit(effect) && Exit.isSuccess(effect)

/** Spawns an actor in the current scope. */
export const spawn = Effect.fnUntraced(function*<M, R>(
  options: SpawnOptions<M, R>,
  hooks?: ActorHooks
): Effect.fn.Return<ActorRef<M>, InvalidOptions, Scope.Scope | R> {
  const checked = yield* Check.mailbox({ module: "ActorRuntime.spawn" }, "mailbox", options.mailbox ?? "unbounded")
  const capacity = checked === "unbounded" ? Number.POSITIVE_INFINITY : checked
  const mailbox = yield* Queue.make<M>({ capacity, strategy: "dropping" })
  let restarts = 0
  let stoppedFlag = false
  const onEnqueue = hooks?.onEnqueue
  const onDone = hooks?.onDone
  const gate = hooks?.gate
  const isOpen = hooks?.isOpen

  /** Set from the moment the loop takes a message until it is handled, so that a stop releases its accounting too. */
  let handling = false
  /** Set while a message is handled in a caller's fiber (`tellOrRun`): the loop waits for it before the next. */
  let inline: Deferred.Deferred<void> | undefined
  /** Messages of `tellLaterUnsafe`, handed to the actor by their own fiber once the fiber that told them yields. */
  const later = yield* Queue.unbounded<M>()
  const context = yield* Effect.context<R>()
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
      handling = true
      if (inline !== undefined) yield* Deferred.await(inline)
      if (gate) yield* gate
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
      const left = Queue.sizeUnsafe(mailbox) + (handling ? 1 : 0) + Queue.sizeUnsafe(later)
      handling = false
      Queue.shutdownUnsafe(mailbox)
      Queue.shutdownUnsafe(later)
      for (let i = 0; i < left; i++) onDone?.()
    }))
  )
  yield* Effect.forkScoped(supervised)

  const full = new MailboxFull({ actor: options.name, capacity })
  const stopped = new ActorStopped({ actor: options.name })
  const tell = (message: M): Effect.Effect<void, MailboxFull | ActorStopped> =>
    Effect.suspend(() => {
      if (Queue.offerUnsafe(mailbox, message)) {
        onEnqueue?.()
        return Effect.void
      }
      return Effect.fail(stoppedFlag ? stopped : full)
    })
  const idle = () => !handling && inline === undefined && !stoppedFlag && Queue.sizeUnsafe(mailbox) === 0

  /**
   * Runs `body` in the caller's fiber as the handler of `message` would run in the loop: the loop waits
   * until it is done. `body` is called at once; when what it returns is already an exit (the work was
   * synchronous), nothing more runs.
   */
  const runInline = (message: M | undefined, body: () => Effect.Effect<void, never, R>): Effect.Effect<void> => {
    const done = Deferred.makeUnsafe<void>()
    inline = done
    onEnqueue?.()
    const release = () => {
      inline = undefined
      onDone?.()
      Deferred.doneUnsafe(done, Exit.void)
    }
    let rest: Effect.Effect<void, never, R>
    try {
      rest = body()
    } catch (defect) {
      rest = Effect.die(defect)
    }
    if (isSucceeded(rest)) {
      release()
      return Effect.void
    }
    return Effect.exit(rest).pipe(
      Effect.flatMap((exit) => {
        release()
        return Exit.isSuccess(exit) ? Effect.void : onInlineFailure(message, exit.cause)
      }),
      // The actor's own context (services, log annotations), not the caller's.
      Effect.updateContext((_: Context.Context<never>) => context),
      Effect.uninterruptible
    )
  }
  /** A defect in a message handled inline: logged and reported as in the loop, counted as a restart (the default schedule restarts forever). */
  const onInlineFailure = (message: M | undefined, cause: Cause.Cause<never>) =>
    (message === undefined ? Effect.logError("actor handler died").pipe(
      Effect.annotateLogs({ actor: options.name, defect: String(Cause.squash(cause)) }),
      Effect.andThen(Effect.fail(new ActorDefect(Cause.squash(cause))))
    ) : onFailure(message, cause)).pipe(
      Effect.catch(() =>
        Effect.sync(() => {
          restarts++
        })
      ),
      Effect.catchCause(() => Effect.void)
    )

  /** Whether a caller may run a handler now: nothing handled or waiting, and the node not paused. */
  const runnable = () => idle() && (isOpen === undefined ? gate === undefined : isOpen())
  const inlineAllowed = options.restart === undefined
  const receiveOf = (message: M) => () => options.receive(message)

  const tellOrRun = !inlineAllowed ? tell : (message: M): Effect.Effect<void, MailboxFull | ActorStopped> =>
    Effect.suspend(() => {
      if (!idle()) return tell(message)
      if (isOpen !== undefined) return isOpen() ? runInline(message, receiveOf(message)) : tell(message)
      if (gate === undefined) return runInline(message, receiveOf(message))
      // A paused node holds the caller here; what happened meanwhile decides the path.
      return Effect.andThen(gate, Effect.suspend(() => idle() ? runInline(message, receiveOf(message)) : tell(message)))
    })

  // Hands the `tellLaterUnsafe` messages to the actor, in order (each counted once: handed over, it is the mailbox's).
  yield* Effect.forkScoped(Effect.forever(
    Effect.flatMap(Queue.take(later), (message) =>
      Effect.ignore(tellOrRun(message)).pipe(Effect.ensuring(Effect.sync(() => onDone?.()))))
  ).pipe(Effect.ignore))

  return {
    name: options.name,
    tell,
    tellLaterUnsafe: (message: M) => {
      if (stoppedFlag || !Queue.offerUnsafe(later, message)) return false
      onEnqueue?.()
      return true
    },
    runIfIdleUnsafe: inlineAllowed
      ? (body: () => Effect.Effect<void>) => runnable() ? runInline(undefined, body) : undefined
      : undefined,
    tellOrRun,
    mailboxSize: Queue.size(mailbox),
    restarts: Effect.sync(() => restarts)
  }
})
