/**
 * Group commit of a persisted state's mutations. A mutation is staged here,
 * not in the actor's mailbox; one `flush`, run by the actor, takes every
 * staged mutation, applies them in order in memory (nothing is visible or
 * sent yet), saves the newest state once, and only then commits each of
 * them in order (published, acknowledged, handed to the sync core). While a
 * save is in flight, new mutations wait here and the next flush covers all
 * of them with one save: a caller returns when the save covering its
 * mutation is durable, and a state pays one save (one fsync with the file
 * store) per batch instead of one per mutation. A failed save fails every
 * mutation it covered with `PersistenceFailed`; none of them becomes
 * visible and the state stays at its last durable generation.
 * @internal
 */
import { Deferred, Effect, Result, type Tracer } from "effect"
import type { MailboxFull, PersistenceFailed } from "../DStateError.ts"
import type { Owner } from "./sync/types.ts"

export interface Committed<S> {
  readonly generation: Owner<S, unknown>["generation"]
  readonly state: S
}

export type Apply<S, C> = (state: S) => { readonly state: S; readonly change: C | undefined }

interface Staged<S, C> {
  readonly apply: Apply<S, C>
  readonly done: Deferred.Deferred<Committed<S>, PersistenceFailed>
  /** Monotonic ms of the `mutate` call. */
  readonly startedAt: number
  /** The mutation's span, when it is traced. */
  readonly span: Tracer.AnySpan | undefined
}

export interface Env<S, V, C> {
  /** At most this many mutations wait (`MailboxFull` past it). */
  readonly capacity: number
  readonly full: MailboxFull
  /** The next owner state after `apply` on `base`, or the defect `apply` or the projection threw. */
  readonly prepare: (
    apply: Apply<S, C>,
    base: Owner<S, V>
  ) => Result.Result<{ readonly next: Owner<S, V>; readonly change: C | undefined }, unknown>
  /** The last durable (and visible) owner state. */
  readonly durable: () => Owner<S, V>
  /**
   * Saves `owner`; `change` is the change of a batch of one (a store may log it instead of rewriting);
   * `spans` are those of the traced mutations the save covers, in order.
   */
  readonly save: (
    owner: Owner<S, V>,
    change: C | undefined,
    spans: ReadonlyArray<Tracer.AnySpan>
  ) => Effect.Effect<void, PersistenceFailed>
  /** Makes one durable mutation visible and acknowledges it. */
  readonly commit: (
    next: Owner<S, V>,
    change: C | undefined,
    done: Deferred.Deferred<Committed<S>, PersistenceFailed>,
    startedAt: number,
    span: Tracer.AnySpan | undefined
  ) => Effect.Effect<void>
  /** A save failed: the batch of `size` mutations is not committed. */
  readonly failed: (error: PersistenceFailed, size: number) => Effect.Effect<void>
  /** Hands a flush to the actor (at once in the caller's fiber when the actor is idle). */
  readonly tellFlush: Effect.Effect<void>
}

export interface GroupCommit<S, C> {
  /** Stages a mutation and, when no flush is on its way, hands one to the actor. */
  readonly mutate: (
    apply: Apply<S, C>,
    startedAt: number,
    span: Tracer.AnySpan | undefined
  ) => Effect.Effect<Committed<S>, PersistenceFailed | MailboxFull>
  /** The actor's handler of a flush. */
  readonly flush: Effect.Effect<void>
  /** The flush died: its mutations die with the defect, and the next mutation hands a new flush over. */
  readonly aborted: (defect: unknown) => Effect.Effect<void>
  /** Mutations waiting for a flush. */
  readonly size: () => number
}

export const make = <S, V, C>(env: Env<S, V, C>): GroupCommit<S, C> => {
  let staged: Array<Staged<S, C>> = []
  /** The batch of the running flush. */
  let batch: ReadonlyArray<Staged<S, C>> = []
  /** Whether a flush is on its way to the actor or running. */
  let flushing = false

  /** After a batch: the next flush when mutations wait, else none is on its way. */
  const next = Effect.suspend(() => {
    batch = []
    if (staged.length === 0) {
      flushing = false
      return Effect.void
    }
    return env.tellFlush
  })

  const flush = Effect.suspend((): Effect.Effect<void> => {
    batch = staged
    staged = []
    let base = env.durable()
    const prepared: Array<{ readonly next: Owner<S, V>; readonly change: C | undefined; readonly item: Staged<S, C> }> = []
    for (const item of batch) {
      const result = env.prepare(item.apply, base)
      if (Result.isFailure(result)) {
        Deferred.doneUnsafe(item.done, Effect.die(result.failure))
        continue
      }
      base = result.success.next
      prepared.push({ ...result.success, item })
    }
    if (prepared.length === 0) return next
    const change = prepared.length === 1 ? prepared[0].change : undefined
    const spans: Array<Tracer.AnySpan> = []
    for (const { item } of prepared) if (item.span !== undefined) spans.push(item.span)
    return env.save(base, change, spans).pipe(
      Effect.matchEffect({
        onFailure: (error) =>
          Effect.andThen(
            env.failed(error, prepared.length),
            Effect.sync(() => {
              for (const { item } of prepared) Deferred.doneUnsafe(item.done, Effect.fail(error))
            })
          ),
        onSuccess: () =>
          Effect.forEach(prepared, ({ change, item, next }) => env.commit(next, change, item.done, item.startedAt, item.span), {
            discard: true
          })
      }),
      Effect.andThen(next)
    )
  })

  return {
    mutate: (apply, startedAt, span) =>
      Effect.suspend((): Effect.Effect<Committed<S>, PersistenceFailed | MailboxFull> => {
        if (staged.length >= env.capacity) return Effect.fail(env.full)
        const done = Deferred.makeUnsafe<Committed<S>, PersistenceFailed>()
        staged.push({ apply, done, startedAt, span })
        if (flushing) return Deferred.await(done)
        flushing = true
        return Effect.andThen(env.tellFlush, Deferred.await(done))
      }),
    flush,
    aborted: (defect) =>
      Effect.suspend(() => {
        for (const item of batch) Deferred.doneUnsafe(item.done, Effect.die(defect))
        return next
      }),
    size: () => staged.length
  }
}
