/**
 * `StatePersistence` doubles for tests: an in-memory store whose records a
 * test can inspect and keep across a node's crash, with fault switches (every
 * save fails, every load fails, saves fail with a seeded probability, the
 * next loads fail), a history of every saved record so that an older snapshot
 * can be brought back, and a store that always fails.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { PersistenceFailed } from "../DStateError.ts"
import { makeMemory, StatePersistence } from "../StatePersistence.ts"
import * as Prng from "./Prng.ts"

/**
 * An in-memory store with fault switches.
 *
 * @category models
 * @since 0.1.0
 */
export interface Store {
  /** stateName → record as JSON text. */
  readonly records: Map<string, string>
  /** When set, every save fails with `PersistenceFailed` (and stores nothing). */
  failSaves: boolean
  /** When set, every load fails with `PersistenceFailed`. */
  failLoads: boolean
  /** Successful saves so far. */
  saves: number
  /**
   * Probability that one save fails with `PersistenceFailed` (and stores
   * nothing), drawn from `random` (default 0).
   */
  saveFailureRate: number
  /** The seeded stream `saveFailureRate` draws from. */
  random: Prng.Prng
  /** The next this many loads fail with `PersistenceFailed` (then loads work again). */
  failNextLoads: number
  /** Saves and loads that failed because of a switch above. */
  failedSaves: number
  failedLoads: number
  /** stateName → every record successfully saved, oldest first (at most `historyLimit` kept). */
  readonly history: Map<string, Array<string>>
  /** How many records `history` keeps per state (default 64). */
  historyLimit: number
}

/**
 * Options of `makeStore`.
 *
 * @category models
 * @since 0.1.0
 */
export interface StoreOptions {
  /** Seed of the stream that decides which saves fail under `saveFailureRate` (default 1). */
  readonly seed?: number | undefined
  /** How many saved records the history keeps per state (default 64). */
  readonly historyLimit?: number | undefined
}

/**
 * A new, empty store.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeStore = (options?: StoreOptions): Store => ({
  records: new Map(),
  failSaves: false,
  failLoads: false,
  saves: 0,
  saveFailureRate: 0,
  random: Prng.make(options?.seed ?? 1),
  failNextLoads: 0,
  failedSaves: 0,
  failedLoads: 0,
  history: new Map(),
  historyLimit: options?.historyLimit ?? 64
})

/**
 * Brings back an older snapshot: every state's current record is replaced by
 * the one saved `steps` saves before it (the history keeps both). States with
 * fewer saved records keep their oldest one. Returns the names of the states
 * whose record changed.
 *
 * **When to use**: simulating a restore from an old backup, or a disk that
 * lost its last writes, before restarting a node.
 *
 * @category combinators
 * @since 0.1.0
 */
export const rollback = (store: Store, steps: number): ReadonlyArray<string> => {
  const changed: Array<string> = []
  for (const [stateName, saved] of store.history) {
    if (saved.length === 0) continue
    const current = store.records.get(stateName)
    const currentIndex = current === undefined ? saved.length : saved.lastIndexOf(current)
    const from = currentIndex === -1 ? saved.length - 1 : currentIndex
    const older = saved[Math.max(0, from - steps)]
    if (older !== current) {
      store.records.set(stateName, older)
      changed.push(stateName)
    }
  }
  return changed
}

/**
 * Forgets everything the store holds (a lost disk): records and history. The
 * switches and counters stay.
 *
 * @category combinators
 * @since 0.1.0
 */
export const wipe = (store: Store): void => {
  store.records.clear()
  store.history.clear()
}

/**
 * Turns every fault switch off (records and history stay).
 *
 * @category combinators
 * @since 0.1.0
 */
export const heal = (store: Store): void => {
  store.failSaves = false
  store.failLoads = false
  store.saveFailureRate = 0
  store.failNextLoads = 0
}

/**
 * `StatePersistence` over a store, honouring its switches.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (store: Store): Layer.Layer<StatePersistence> =>
  Layer.sync(StatePersistence)(() => {
    const memory = makeMemory(store.records)
    const remember = (stateName: string) => {
      const text = store.records.get(stateName)
      if (text === undefined) return
      let saved = store.history.get(stateName)
      if (saved === undefined) {
        saved = []
        store.history.set(stateName, saved)
      }
      saved.push(text)
      if (saved.length > store.historyLimit) saved.splice(0, saved.length - store.historyLimit)
    }
    return StatePersistence.of({
      load: (stateName) =>
        Effect.suspend(() => {
          if (store.failLoads || store.failNextLoads > 0) {
            if (store.failNextLoads > 0) store.failNextLoads--
            store.failedLoads++
            return Effect.fail(
              new PersistenceFailed({ stateName, operation: "load", reason: "load failure injected by the test store" })
            )
          }
          return memory.load(stateName)
        }),
      save: (stateName, record, change) =>
        Effect.suspend(() => {
          if (store.failSaves || store.random.chance(store.saveFailureRate)) {
            store.failedSaves++
            return Effect.fail(
              new PersistenceFailed({ stateName, operation: "save", reason: "save failure injected by the test store" })
            )
          }
          return memory.save(stateName, record, change).pipe(
            Effect.tap(() =>
              Effect.sync(() => {
                store.saves++
                remember(stateName)
              })
            )
          )
        })
    })
  })

/**
 * A store where every load and save fails.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerFailing: Layer.Layer<StatePersistence> = Layer.suspend(() =>
  layer({ ...makeStore(), failSaves: true, failLoads: true })
)
