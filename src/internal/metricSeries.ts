/**
 * Series of the metrics in `Metrics.ts` for one set of labels, registered in
 * the context's `Metric.MetricRegistry`. A counter series is a number dstate
 * keeps and the registry reads (`Metric.registerUnsafe`), so that an
 * increment costs one addition and the registry, an exporter and the
 * diagnostics all see the same count. A gauge series is read from its
 * source when the registry is read. A histogram series is updated through
 * the registry. Every registration is removed by `remove`.
 * @internal
 */
import { Context, Metric } from "effect"

export interface CounterSeries<K extends string> {
  /** The counts, as the registry reads them (incremented in place by their owner). */
  readonly values: { [key in K]: number }
  readonly inc: (key: K, by?: number) => void
  readonly remove: () => void
}

/** The context whose registry and labels the series use. */
export const labelled = (context: Context.Context<never>, labels: Record<string, string>): Context.Context<never> =>
  Context.add(context, Metric.CurrentMetricAttributes, { ...Context.get(context, Metric.CurrentMetricAttributes), ...labels })

const noop = () => {}

export const counters = <K extends string>(
  metrics: { readonly [key in K]: Metric.Counter<number> },
  context: Context.Context<never>
): CounterSeries<K> => {
  const values = {} as { [key in K]: number }
  const registrations: Array<Metric.Registration> = []
  for (const key of Object.keys(metrics) as Array<K>) {
    values[key] = 0
    registrations.push(Metric.registerUnsafe(metrics[key], context, {
      get: () => ({ count: values[key], incremental: true }),
      update: noop,
      modify: noop
    }))
  }
  return {
    values,
    inc: (key, by = 1) => {
      values[key] += by
    },
    remove: () => {
      for (const registration of registrations) registration.remove()
    }
  }
}

/** A gauge series whose value is `read` whenever the registry is read. */
export const gauge = (metric: Metric.Gauge<number>, context: Context.Context<never>, read: () => number): Metric.Registration =>
  Metric.registerUnsafe(metric, context, { get: () => ({ value: read() }), update: noop, modify: noop })

/**
 * A histogram series over `boundaries` (ascending, the last bucket open), kept here like a counter series:
 * `observe` costs a bucket search and four updates, with no registry lookup.
 */
export const histogram = (
  metric: Metric.Histogram<number>,
  boundaries: ReadonlyArray<number>,
  context: Context.Context<never>
) => {
  const bounds = Float64Array.from(boundaries)
  const counts = new Uint32Array(bounds.length + 1)
  let count = 0
  let sum = 0
  let min = Number.MAX_VALUE
  let max = -Number.MAX_VALUE
  const registration = Metric.registerUnsafe(metric, context, {
    get: () => {
      const buckets: Array<[number, number]> = []
      let cumulative = 0
      for (let i = 0; i < bounds.length; i++) {
        cumulative += counts[i]
        buckets.push([bounds[i], cumulative])
      }
      return { buckets, count, min, max, sum }
    },
    update: noop,
    modify: noop
  })
  return {
    observe: (value: number): void => {
      let lo = 0
      let hi = bounds.length
      while (lo < hi) {
        const mid = (lo + hi) >>> 1
        if (value <= bounds[mid]) hi = mid
        else lo = mid + 1
      }
      counts[lo]++
      count++
      sum += value
      if (value < min) min = value
      if (value > max) max = value
    },
    remove: registration.remove
  }
}
