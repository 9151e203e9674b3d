/**
 * Counters that are both plain numbers (for `metrics` snapshots) and Effect
 * `Metric` counters (for whatever metrics exporter the application runs).
 * @internal
 */
import { type Context, Metric } from "effect"

export interface Counters<K extends string> {
  readonly values: { readonly [key in K]: number }
  readonly inc: (key: K, by?: number) => void
}

export const make = <K extends string>(
  prefix: string,
  keys: ReadonlyArray<K>,
  attributes: Record<string, string>,
  context: Context.Context<never>
): Counters<K> => {
  const values = {} as { [key in K]: number }
  const metrics = {} as { [key in K]: Metric.Counter<number> }
  for (const key of keys) {
    values[key] = 0
    metrics[key] = Metric.counter(`${prefix}_${snake(key)}`, { attributes, incremental: true })
  }
  return {
    values,
    inc: (key, by = 1) => {
      values[key] += by
      metrics[key].updateUnsafe(by, context)
    }
  }
}

const snake = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
