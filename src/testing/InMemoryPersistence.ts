/**
 * `StatePersistence` doubles for tests: an in-memory store whose records a
 * test can inspect and keep across a node's crash, with switches that make
 * saves or loads fail, and a store that always fails.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { PersistenceFailed } from "../DStateError.ts"
import { makeMemory, StatePersistence } from "../StatePersistence.ts"

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
}

/**
 * A new, empty store.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeStore = (): Store => ({ records: new Map(), failSaves: false, failLoads: false, saves: 0 })

/**
 * `StatePersistence` over a store, honouring its switches.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (store: Store): Layer.Layer<StatePersistence> =>
  Layer.sync(StatePersistence)(() => {
    const memory = makeMemory(store.records)
    return StatePersistence.of({
      load: (stateName) =>
        store.failLoads
          ? Effect.fail(new PersistenceFailed({ stateName, operation: "load", reason: "load failure injected by the test store" }))
          : memory.load(stateName),
      save: (stateName, record, change) =>
        store.failSaves
          ? Effect.fail(new PersistenceFailed({ stateName, operation: "save", reason: "save failure injected by the test store" }))
          : memory.save(stateName, record, change).pipe(Effect.tap(() => Effect.sync(() => store.saves++)))
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
